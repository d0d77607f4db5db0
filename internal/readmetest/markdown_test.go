package readmetest

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// fence is a fenced code block of a Markdown text.
type fence struct {
	line int      // the line of its first line of code
	info []string // the words after the opening ```
	text string
}

// fences returns the fenced code blocks of md and calls prose, when it is
// not nil, with each line outside them.
func fences(md []byte, prose func(line string)) ([]fence, error) {
	sc := bufio.NewScanner(bytes.NewReader(md))
	var out []fence
	var cur *fence
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &fence{line: n + 1, info: strings.Fields(strings.TrimPrefix(line, "```"))}
		case cur != nil && strings.HasPrefix(line, "```"):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case prose != nil:
			prose(line)
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("the code block of line %d is not closed", cur.line-1)
	}
	return out, sc.Err()
}

// lang is the language of f ("" for none) and the word after it.
func (f fence) lang() (lang, mode string) {
	if len(f.info) > 0 {
		lang = f.info[0]
	}
	if len(f.info) > 1 {
		mode = f.info[1]
	}
	return lang, mode
}
