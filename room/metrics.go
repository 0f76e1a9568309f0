package room

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The rooms' numbers, read from this node's view at scrape time.
var (
	joinedDesc  = prometheus.NewDesc("dibs_room_joined", "People who joined a drop's waiting room (tickets issued).", []string{"drop"}, nil)
	servedDesc  = prometheus.NewDesc("dibs_room_served", "Positions a drop's waiting room has admitted.", []string{"drop"}, nil)
	waitingDesc = prometheus.NewDesc("dibs_room_waiting", "People in a drop's waiting room not admitted yet.", []string{"drop"}, nil)
	pendingDesc = prometheus.NewDesc("dibs_room_admissions_outstanding", "Admissions alive and not yet used to claim.", []string{"drop"}, nil)
	rateDesc    = prometheus.NewDesc("dibs_room_admitted_per_second", "Admissions a second, as the room's leader measures them.", []string{"drop"}, nil)
	soldOutDesc = prometheus.NewDesc("dibs_room_sold_out", "1 once no slot of the drop can come back.", []string{"drop"}, nil)
	leaderDesc  = prometheus.NewDesc("dibs_room_leader", "1 if this node leads the drop's waiting room.", []string{"drop"}, nil)
)

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{joinedDesc, servedDesc, waitingDesc, pendingDesc, rateDesc, soldOutDesc, leaderDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It reads this node's view of
// each room, never the backend.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	gauge := func(d *prometheus.Desc, v float64, drop string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, drop)
	}
	for id, e := range s.rooms {
		snap := e.snap.Load()
		if snap == nil {
			continue
		}
		gauge(joinedDesc, float64(snap.Issued), id)
		gauge(servedDesc, float64(snap.Serving), id)
		gauge(waitingDesc, float64(snap.Issued-min(snap.Serving, snap.Issued)), id)
		gauge(pendingDesc, float64(snap.outstanding), id)
		gauge(rateDesc, snap.Rate, id)
		gauge(soldOutDesc, bool01(snap.SoldOut), id)
		gauge(leaderDesc, bool01(snap.leader), id)
	}
}

// Register registers the rooms' collector with reg.
func (s *Service) Register(reg prometheus.Registerer) error { return reg.Register(s) }

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
