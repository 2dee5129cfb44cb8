package cli

import "fmt"

// plural writes a count with its noun in the right number: "1 LoRA", "2 LoRAs",
// "1 possible secret", "0 files". Nouns ending in "s", "x" or "sh" take "es".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	for _, end := range []string{"s", "x", "sh", "ch"} {
		if len(noun) >= len(end) && noun[len(noun)-len(end):] == end {
			return fmt.Sprintf("%d %ses", n, noun)
		}
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
