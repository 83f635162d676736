// Command cron-reference answers, for each line of standard input, what Kubernetes makes of a
// CronJob schedule: whether the API server accepts it (the CronJob validation: robfig/cron v3's
// standard parser, and no TZ or CRON_TZ in the expression) and, when it does, the next fire times
// the CronJob controller computes in a time zone (it parses "CRON_TZ=<zone> <schedule>").
//
// Input lines:  <zone>\t<unix seconds>\t<count>\t<expression>
// Output lines: ok\t<unix>,<unix>,...   (0 means never: robfig's zero time)
//           or: refused\t<message>
//
// tests/cron_reference.rs runs it against src/cron.rs over thousands of generated expressions.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		parts := strings.SplitN(in.Text(), "\t", 4)
		if len(parts) != 4 {
			fmt.Fprintf(os.Stderr, "cron-reference: want 4 tab-separated fields, got %q\n", in.Text())
			os.Exit(2)
		}
		start, err1 := strconv.ParseInt(parts[1], 10, 64)
		count, err2 := strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil {
			fmt.Fprintf(os.Stderr, "cron-reference: bad start or count in %q\n", in.Text())
			os.Exit(2)
		}
		fmt.Fprintln(out, answer(parts[0], start, count, parts[3]))
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "cron-reference:", err)
		os.Exit(2)
	}
}

func answer(zone string, start int64, count int, expression string) string {
	// What kube-apiserver's CronJob validation accepts (validateScheduleFormat).
	if _, err := cron.ParseStandard(expression); err != nil {
		return "refused\t" + err.Error()
	}
	if strings.Contains(expression, "TZ") {
		return "refused\tcannot use TZ or CRON_TZ in schedule, use timeZone field instead"
	}
	// What the CronJob controller computes (formatSchedule, then Next from the last time).
	schedule, err := cron.ParseStandard("CRON_TZ=" + zone + " " + expression)
	if err != nil {
		return "refused\t" + err.Error()
	}
	times := make([]string, 0, count)
	t := time.Unix(start, 0).UTC()
	for i := 0; i < count; i++ {
		t = schedule.Next(t)
		if t.IsZero() {
			times = append(times, "0")
			break
		}
		times = append(times, strconv.FormatInt(t.Unix(), 10))
	}
	return "ok\t" + strings.Join(times, ",")
}
