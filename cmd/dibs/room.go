package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/room"
)

// RoomConfig configures the waiting rooms of queued drops.
type RoomConfig struct {
	// Secret keys tickets and admissions (DIBS_ROOM_SECRET). Empty: derived
	// from the passport secret with HKDF-SHA256 and the label
	// "dibs waiting room v1", so every node of a deployment agrees.
	Secret         string
	AdmissionTTL   time.Duration     // how long an admitted person has to claim
	Joins          httpapi.JoinLimit // joins per client address
	ClientIPHeader string            // header a trusted proxy sets; empty: the connection's address
}

func defaultRoomConfig() RoomConfig {
	return RoomConfig{
		AdmissionTTL: dibs.DefaultAdmissionTTL,
		Joins: httpapi.JoinLimit{
			Rate: httpapi.DefaultJoinRate, Burst: httpapi.DefaultJoinBurst, MaxClients: httpapi.DefaultMaxJoinClients,
		},
	}
}

func (c *Config) roomFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Limits.Queue, "queue-inflight", c.Limits.Queue, "waiting-room joins and status reads in flight before shedding")
	fs.IntVar(&c.Limits.Stream, "max-streams", c.Limits.Stream, "open waiting-room event streams before refusing more with 503")
	fs.DurationVar(&c.Room.AdmissionTTL, "admission-ttl", c.Room.AdmissionTTL, "how long an admitted person has to claim before the turn passes")
	fs.Float64Var(&c.Room.Joins.Rate, "join-rate", c.Room.Joins.Rate, "waiting-room joins per second per client address (0: unlimited)")
	fs.IntVar(&c.Room.Joins.Burst, "join-burst", c.Room.Joins.Burst, "waiting-room joins at once per client address")
	fs.StringVar(&c.Room.ClientIPHeader, "client-ip-header", c.Room.ClientIPHeader,
		"header a trusted proxy puts the client address in, e.g. X-Forwarded-For (last entry); empty: the connection's address")
}

func (c *Config) validateRoom() error {
	switch r := c.Room; {
	case r.Secret != "" && len(r.Secret) < room.MinSecretLen:
		return fmt.Errorf("DIBS_ROOM_SECRET must be at least %d bytes, or unset to derive it from DIBS_PASSPORT_SECRET", room.MinSecretLen)
	case r.AdmissionTTL < time.Second || r.AdmissionTTL > 10*time.Minute:
		return errors.New("--admission-ttl must be between 1s and 10m")
	case r.Joins.Rate > 0 && r.Joins.Burst < 1:
		return errors.New("--join-burst must be at least 1")
	case c.Limits.Queue < 1 || c.Limits.Stream < 1:
		return errors.New("--queue-inflight and --max-streams must be at least 1")
	}
	return nil
}

// openRoom returns the waiting rooms of a node: kept in Redis, shared by
// every node, when client is given (the --redis wiring passes its
// primary-only client), else in this process's memory.
func openRoom(cfg Config, client redis.Client, pacer room.Pacer, log *slog.Logger) (*room.Service, error) {
	var backend dibs.Room = memory.NewRoom()
	if client != nil {
		r, err := redis.NewRoom(client, redis.RoomOptions{Prefix: cfg.Redis.Prefix})
		if err != nil {
			return nil, err
		}
		backend = r
	}
	secret := []byte(cfg.Room.Secret)
	if len(secret) == 0 {
		var err error
		if secret, err = room.DeriveSecret([]byte(cfg.PassportSecret)); err != nil {
			return nil, fmt.Errorf("derive room secret: %w", err)
		}
	}
	return room.New(room.Config{Backend: backend, Secret: secret, AdmissionTTL: cfg.Room.AdmissionTTL, Pacer: pacer, Logger: log})
}

// startRoom runs the rooms' loop over the engine's drops until Close.
func (m *Main) startRoom(ctx context.Context) error {
	m.roomLeader = m.room.Leader(m.engine)
	return m.roomLeader.Start(context.WithoutCancel(ctx))
}
