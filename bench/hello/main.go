// Command hello prints one line: the start-up of a static Go program and
// nothing else. bench/ports.sh times it beside bridge(8), so the share of
// a ratio no Go program can avoid on the machine is measured.
package main

import "os"

func main() { os.Stdout.WriteString("hello\n") }
