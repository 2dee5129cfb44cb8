package gpu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ParseQueryCSV reads the output of
//
//	nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw,power.limit,driver_version --format=csv[,noheader][,nounits]
//
// With header, the columns are taken from the header line ("memory.used [MiB]", …), so any
// --query-gpu field list in any order is read, fields it does not know are skipped, and
// missing ones stay zero. Without header, the columns must be QueryArgs' fields, in that order
// (ParseQueryCSVColumns reads other lists). Values may carry units ("81559 MiB", "0 %",
// "122.86 W"); "[N/A]", "[Not Supported]" and other bracketed values leave the field zero.
func ParseQueryCSV(r io.Reader, header bool) ([]GPU, error) {
	if !header {
		return ParseQueryCSVColumns(r, queryFields)
	}
	return parseQueryCSV(r, nil)
}

// ParseQueryCSVColumns reads --format=csv,noheader output of a --query-gpu with the given
// field list, e.g. []string{"index", "name", "uuid", "memory.total"}.
func ParseQueryCSVColumns(r io.Reader, columns []string) ([]GPU, error) {
	cols, err := csvColumns(columns)
	if err != nil {
		return nil, err
	}
	return parseQueryCSV(r, cols)
}

// csvField is what a --query-gpu column fills in. Several columns can fill the same field
// (power.draw, power.draw.average, power.draw.instant); the highest prio known value wins.
type csvField int

const (
	fNone csvField = iota
	fIndex
	fUUID
	fName
	fMemUsed
	fMemTotal
	fUtil
	fTemp
	fPower
	fPowerLimit
	fDriver
	nFields
)

type csvColumn struct {
	name  string
	field csvField
	prio  int
}

var knownColumns = map[string]csvColumn{
	"index":                {field: fIndex, prio: 1},
	"uuid":                 {field: fUUID, prio: 2},
	"gpu_uuid":             {field: fUUID, prio: 1},
	"name":                 {field: fName, prio: 2},
	"gpu_name":             {field: fName, prio: 1},
	"memory.used":          {field: fMemUsed, prio: 1},
	"memory.total":         {field: fMemTotal, prio: 1},
	"utilization.gpu":      {field: fUtil, prio: 1},
	"temperature.gpu":      {field: fTemp, prio: 1},
	"power.draw":           {field: fPower, prio: 3},
	"power.draw.average":   {field: fPower, prio: 2},
	"power.draw.instant":   {field: fPower, prio: 1},
	"power.limit":          {field: fPowerLimit, prio: 2},
	"enforced.power.limit": {field: fPowerLimit, prio: 1},
	"driver_version":       {field: fDriver, prio: 1},
}

// columnName turns a query field or a header cell ("memory.used [MiB]") into its key.
func columnName(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '['); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(strings.TrimSpace(s))
}

func csvColumns(names []string) ([]csvColumn, error) {
	cols := make([]csvColumn, len(names))
	known := 0
	for i, n := range names {
		k := columnName(n)
		c := knownColumns[k]
		c.name = k
		if c.field != fNone {
			known++
		}
		cols[i] = c
	}
	if known == 0 {
		return nil, fmt.Errorf("no known --query-gpu field in %q", strings.Join(names, ", "))
	}
	return cols, nil
}

func parseQueryCSV(r io.Reader, cols []csvColumn) ([]GPU, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	gpus := []GPU{}
	nameCols := 0
	for _, c := range cols {
		if c.field == fName {
			nameCols++
		}
	}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		cells := strings.Split(text, ",")
		if cols == nil { // the header line
			c, err := csvColumns(cells)
			if err != nil {
				return nil, fmt.Errorf("line %d: not a --query-gpu header: %w", line, err)
			}
			cols = c
			for _, c := range cols {
				if c.field == fName {
					nameCols++
				}
			}
			continue
		}
		if len(cells) > len(cols) && nameCols == 1 {
			// nvidia-smi does not quote: a name with commas in it spans several cells.
			cells = mergeName(cells, cols)
		}
		if len(cells) != len(cols) {
			return nil, fmt.Errorf("line %d: %d fields, want %d: %q", line, len(cells), len(cols), clip(text))
		}
		g, err := parseQueryRow(cells, cols)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if g.Index < 0 {
			g.Index = len(gpus)
		}
		gpus = append(gpus, g)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cols == nil {
		return nil, errors.New("no header line")
	}
	return gpus, nil
}

func mergeName(cells []string, cols []csvColumn) []string {
	extra := len(cells) - len(cols)
	for i, c := range cols {
		if c.field == fName {
			merged := make([]string, 0, len(cols))
			merged = append(merged, cells[:i]...)
			parts := cells[i : i+extra+1]
			for j := range parts {
				parts[j] = strings.TrimSpace(parts[j])
			}
			merged = append(merged, strings.Join(parts, ", "))
			return append(merged, cells[i+extra+1:]...)
		}
	}
	return cells
}

func parseQueryRow(cells []string, cols []csvColumn) (GPU, error) {
	g := GPU{Index: -1}
	var prio [nFields]int
	for i, c := range cols {
		if c.field == fNone {
			continue
		}
		v := strings.TrimSpace(cells[i])
		if unknownValue(v) || c.prio < prio[c.field] {
			continue
		}
		var err error
		switch c.field {
		case fIndex:
			g.Index, err = parseInt(v, "")
			if err == nil && g.Index < 0 {
				err = errors.New("negative")
			}
		case fUUID:
			g.UUID = v
		case fName:
			g.Name = v
		case fDriver:
			g.Driver = v
		case fMemUsed:
			g.MemoryUsedMiB, err = parseInt64(v, "MiB")
		case fMemTotal:
			g.MemoryTotalMiB, err = parseInt64(v, "MiB")
		case fUtil:
			g.UtilizationPct, err = parseInt(v, "%")
		case fTemp:
			g.TemperatureC, err = parseInt(v, "C")
		case fPower:
			g.PowerW, err = parseFloat(v, "W")
		case fPowerLimit:
			g.PowerLimitW, err = parseFloat(v, "W")
		}
		if err != nil {
			return GPU{}, fmt.Errorf("%s: %q: %w", c.name, clip(v), err)
		}
		prio[c.field] = c.prio
	}
	return g, nil
}

// unknownValue reports whether v is how nvidia-smi says a value is not there: "[N/A]",
// "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]", "N/A", or nothing.
func unknownValue(v string) bool {
	if v == "" || (strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]")) {
		return true
	}
	switch strings.ToLower(v) {
	case "n/a", "not supported", "unknown error", "unknown", "none":
		return true
	}
	return false
}

// number strips an optional unit ("81559 MiB", "81559MiB", "81559") from v.
func number(v, unit string) string {
	v = strings.TrimSpace(v)
	if unit != "" {
		if s, ok := strings.CutSuffix(v, unit); ok {
			v = strings.TrimSpace(s)
		}
	}
	return v
}

func parseInt64(v, unit string) (int64, error) {
	n, err := strconv.ParseInt(number(v, unit), 10, 64)
	if err != nil {
		return 0, errors.Unwrap(err)
	}
	return n, nil
}

func parseInt(v, unit string) (int, error) {
	n, err := strconv.ParseInt(number(v, unit), 10, strconv.IntSize)
	if err != nil {
		return 0, errors.Unwrap(err)
	}
	return int(n), nil
}

func parseFloat(v, unit string) (float64, error) {
	s := number(v, unit)
	// Plain decimals only: ParseFloat also takes "NaN", "Inf", "0x1p4" and "1_0".
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r == '.' || r == '-' || r == '+' || r == 'e' || r == 'E') {
			return 0, strconv.ErrSyntax
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, errors.Unwrap(err)
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, strconv.ErrRange
	}
	return f, nil
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
