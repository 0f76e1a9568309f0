package loadgen

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
)

var (
	//go:embed uplot/uPlot.iife.min.js
	uplotJS string
	//go:embed uplot/uPlot.min.css
	uplotCSS string
	//go:embed report.html.tmpl
	reportHTML string
)

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":    ms,
	"pct":   func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"upper": func(s CheckStatus) string { return strings.ToUpper(string(s)) },
}).Parse(reportHTML))

// WriteHTML writes r as one self-contained HTML page: the summary, the audit
// and charts of the sell-out curve, answers per second, claim latency per
// second and the regular traffic's latency. The chart library is inlined, so
// the page opens without a network.
func (r *Report) WriteHTML(w io.Writer) error {
	var summary strings.Builder
	if err := r.Summary(&summary); err != nil {
		return err
	}
	return reportTemplate.Execute(w, struct {
		*Report
		JS  template.JS
		CSS template.CSS
		Sum string // the text summary, for copying into a ticket
	}{Report: r, JS: template.JS(uplotJS), CSS: template.CSS(uplotCSS), Sum: summary.String()})
}
