package redistest

import (
	"os/exec"
	"syscall"
)

// setProcAttr has the kernel kill redis-server when the test binary dies
// without running its cleanups (a timeout panic, a kill), so that no server
// outlives the test run.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
