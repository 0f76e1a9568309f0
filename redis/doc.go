// Package redis keeps the gate and the waiting room on Redis, for many
// stateless dibs nodes. Every key of a drop is under the hash tag
// {drop:ID}, so each drop's state lives in one Redis Cluster slot and its
// scripts stay atomic. Clients must talk to the primary only: a replica
// lags, and a lagging counter lets in more winners than there is stock.
package redis
