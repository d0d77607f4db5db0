package redistest

import (
	"os/exec"
	"syscall"
)

// setProcAttr has the kernel kill redis-server when the test binary dies
// without running its cleanups (a timeout panic, a kill), so that no server
// outlives the test run, and puts it in a process group of its own, which
// kill ends with the children it forked.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// kill sends SIGKILL to cmd's process group: redis-server and the children
// it forked (a snapshot for a replica).
func kill(cmd *exec.Cmd) {
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		_ = cmd.Process.Kill()
	}
}
