package loadgen_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/dibs-io/dibs/loadgen"
)

// Fire 200,000 users within two seconds at an existing drop, with regular
// traffic alongside, then print the summary and fail on a broken invariant.
func ExampleRun() {
	cfg := loadgen.Config{
		Target:         "http://127.0.0.1:8080",
		DropID:         "pepero-day",
		Users:          200_000,
		Profile:        loadgen.Profile{Shape: loadgen.Spike, Duration: 2 * time.Second},
		RetryFraction:  loadgen.DefaultRetryFraction,
		PassportSecret: []byte(os.Getenv("DIBS_PASSPORT_SECRET")),
		AdminToken:     os.Getenv("DIBS_ADMIN_TOKEN"),
		Regular:        loadgen.RegularConfig{Rate: 500},
		Progress:       loadgen.TerminalWriter(os.Stderr),
	}
	rep, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	_ = rep.Summary(os.Stdout)
	if f, err := os.Create("report.html"); err == nil {
		_ = rep.WriteHTML(f)
		_ = f.Close()
	}
	if err := rep.Err(); err != nil {
		log.Fatal(err)
	}
}
