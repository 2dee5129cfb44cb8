package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite"
)

func sqliteDSN(path string) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=busy_timeout(30000)"
}

// pySQLiteErr renders a driver error the way Python's sqlite3 reports it.
func pySQLiteErr(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && strings.Contains(msg[:i], "error") {
		msg = msg[i+2:]
	}
	if i := strings.LastIndex(msg, " ("); i >= 0 && strings.HasSuffix(msg, ")") {
		msg = msg[:i]
	}
	return pyErr("sqlite3.OperationalError", msg)
}

// jobDB is DiffusionTrainer's side of the UI job database: a new connection
// per statement (timeout 30 s, autocommit, BEGIN IMMEDIATE for writes),
// retried 3 times with 2/4/8 s back-off on "database is locked".
type jobDB struct {
	path, id string
}

func (d *jobDB) retry(op func() error) {
	var last error
	for attempt := 0; attempt <= 3; attempt++ {
		err := op()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "database is locked") && !strings.Contains(err.Error(), "SQLITE_BUSY") {
			raise(pySQLiteErr(err))
		}
		last = err
		if attempt < 3 {
			delay := 2.0 * float64(int(1)<<attempt)
			printf("[AITK] Database locked (attempt %d/%d), retrying in %.1fs...", attempt+1, 4, delay)
			time.Sleep(time.Duration(delay * float64(time.Second)))
		} else {
			printf("[AITK] Database locked after %d attempts, giving up.", 4)
		}
	}
	raise(pyErr("sqlite3.OperationalError", "database is locked", fmt.Sprint(last)))
}

func (d *jobDB) conn(fn func(c *sql.Conn) error) error {
	db, err := sql.Open("sqlite", sqliteDSN(d.path))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// flag is `SELECT <col> FROM Job WHERE id = ?` → value == 1.
func (d *jobDB) flag(col string) bool {
	var res bool
	d.retry(func() error {
		return d.conn(func(c *sql.Conn) error {
			var v any
			err := c.QueryRowContext(context.Background(), "SELECT "+col+" FROM Job WHERE id = ?", d.id).Scan(&v)
			if err == sql.ErrNoRows {
				res = false
				return nil
			}
			if err != nil {
				return err
			}
			switch x := v.(type) {
			case int64:
				res = x == 1
			case float64:
				res = x == 1
			case bool:
				res = x
			default:
				res = false
			}
			return nil
		})
	})
	return res
}

func (d *jobDB) write(query string, args ...any) {
	d.retry(func() error {
		return d.conn(func(c *sql.Conn) error {
			ctx := context.Background()
			if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
				return err
			}
			_, err := c.ExecContext(ctx, query, args...)
			if _, cerr := c.ExecContext(ctx, "COMMIT"); err == nil {
				err = cerr
			}
			return err
		})
	})
}

// updateStatus is _update_status: status and info (info nil: status only).
func (d *jobDB) updateStatus(status string, info *string) {
	if info != nil {
		d.write("UPDATE Job SET status = ?, info = ? WHERE id = ?", status, *info, d.id)
	} else {
		d.write("UPDATE Job SET status = ? WHERE id = ?", status, d.id)
	}
}

// updateKey is _update_key: the value is written as str(value).
func (d *jobDB) updateKey(key string, value any) {
	d.write("UPDATE Job SET "+key+" = ? WHERE id = ?", pyStr(value), d.id)
}

// ---- loss_log.db (toolkit/logging_aitk.py UILogger) ----

type metricRow struct {
	step int
	key  string
	vr   *float64
	vt   *string
}

type uiLogger struct {
	path        string
	db          *sql.DB
	c           *sql.Conn
	started     bool
	toCommit    *omap
	stepCounter int
	pendSteps   [][2]any
	pendMetrics []metricRow
	pendKeys    map[string][2]int
	keyOrder    []string
	lastFlush   time.Time
	firstCommit bool
}

func newUILogger(path string) *uiLogger {
	return &uiLogger{path: path, toCommit: newOmap(), pendKeys: map[string][2]int{}}
}

func (l *uiLogger) exec(q string, args ...any) {
	if _, err := l.c.ExecContext(context.Background(), q, args...); err != nil {
		raise(pySQLiteErr(err))
	}
}

func (l *uiLogger) start() {
	if l.started {
		return
	}
	db, err := sql.Open("sqlite", sqliteDSN(l.path))
	if err != nil {
		raise(pySQLiteErr(err))
	}
	db.SetMaxOpenConns(1)
	c, err := db.Conn(context.Background())
	if err != nil {
		raise(pyErr("sqlite3.OperationalError", "unable to open database file"))
	}
	l.db, l.c = db, c
	l.exec("PRAGMA journal_mode=WAL;")
	l.exec("PRAGMA synchronous=NORMAL;")
	l.exec("PRAGMA temp_store=MEMORY;")
	l.exec("PRAGMA foreign_keys=ON;")
	l.exec("PRAGMA busy_timeout=30000;")
	l.exec("BEGIN;")
	l.exec(`CREATE TABLE IF NOT EXISTS steps (
                step      INTEGER PRIMARY KEY,
                wall_time REAL NOT NULL
            );`)
	l.exec(`CREATE TABLE IF NOT EXISTS metric_keys (
                key             TEXT PRIMARY KEY,
                first_seen_step INTEGER,
                last_seen_step  INTEGER
            );`)
	l.exec(`CREATE TABLE IF NOT EXISTS metrics (
                step       INTEGER NOT NULL,
                key        TEXT NOT NULL,
                value_real REAL,
                value_text TEXT,
                PRIMARY KEY (step, key),
                FOREIGN KEY (step) REFERENCES steps(step) ON DELETE CASCADE
            );`)
	l.exec("CREATE INDEX IF NOT EXISTS idx_metrics_key_step ON metrics (key, step);")
	l.exec("COMMIT;")
	l.started = true
	l.lastFlush = time.Now()
}

func (l *uiLogger) log(k string, v any) { l.toCommit.set(k, v) }

func (l *uiLogger) commit(step int) {
	if !l.started {
		l.start()
	}
	if len(l.toCommit.keys) == 0 {
		return
	}
	if step >= l.stepCounter {
		l.stepCounter = step + 1
	}
	if !l.firstCommit {
		l.exec("BEGIN;")
		l.exec("DELETE FROM steps WHERE step > ?;", step)
		l.exec("DELETE FROM metric_keys WHERE NOT EXISTS (SELECT 1 FROM metrics WHERE metrics.key = metric_keys.key);")
		l.exec("UPDATE metric_keys SET last_seen_step = (SELECT MAX(step) FROM metrics WHERE metrics.key = metric_keys.key) WHERE last_seen_step > ?;", step)
		l.exec("COMMIT;")
		l.firstCommit = true
	}
	l.pendSteps = append(l.pendSteps, [2]any{step, float64(time.Now().UnixNano()) / 1e9})
	for _, k := range l.toCommit.keys {
		row := metricRow{step: step, key: k}
		switch x := l.toCommit.vals[k].(type) {
		case nil:
		case bool:
			f := 0.0
			if x {
				f = 1
			}
			row.vr = &f
		case float64:
			row.vr = &x
		case int64:
			f := float64(x)
			row.vr = &f
		default:
			s := pyStr(x)
			row.vt = &s
		}
		l.pendMetrics = append(l.pendMetrics, row)
		if mm, ok := l.pendKeys[k]; ok {
			l.pendKeys[k] = [2]int{min(mm[0], step), max(mm[1], step)}
		} else {
			l.pendKeys[k] = [2]int{step, step}
			l.keyOrder = append(l.keyOrder, k)
		}
	}
	l.toCommit = newOmap()
	if len(l.pendMetrics) >= 256 || time.Since(l.lastFlush) >= 250*time.Millisecond {
		l.flush()
	}
}

func (l *uiLogger) flush() {
	if len(l.pendSteps) == 0 && len(l.pendMetrics) == 0 {
		return
	}
	l.exec("BEGIN;")
	for _, s := range l.pendSteps {
		l.exec("INSERT INTO steps(step, wall_time) VALUES(?, ?) ON CONFLICT(step) DO UPDATE SET wall_time=excluded.wall_time;", s[0], s[1])
	}
	for _, k := range l.keyOrder {
		mm := l.pendKeys[k]
		l.exec("INSERT INTO metric_keys(key, first_seen_step, last_seen_step) VALUES(?, ?, ?) ON CONFLICT(key) DO UPDATE SET first_seen_step=MIN(metric_keys.first_seen_step, excluded.first_seen_step), last_seen_step=MAX(metric_keys.last_seen_step, excluded.last_seen_step);", k, mm[0], mm[1])
	}
	for _, m := range l.pendMetrics {
		var vr, vt any
		if m.vr != nil {
			vr = *m.vr
		}
		if m.vt != nil {
			vt = *m.vt
		}
		l.exec("INSERT INTO metrics(step, key, value_real, value_text) VALUES(?, ?, ?, ?) ON CONFLICT(step, key) DO UPDATE SET value_real=excluded.value_real, value_text=excluded.value_text;", m.step, m.key, vr, vt)
	}
	l.exec("COMMIT;")
	l.pendSteps, l.pendMetrics = nil, nil
	l.pendKeys, l.keyOrder = map[string][2]int{}, nil
	l.lastFlush = time.Now()
}

func (l *uiLogger) finish() {
	if !l.started {
		return
	}
	l.flush()
	l.c.Close()
	l.db.Close()
	l.started = false
}
