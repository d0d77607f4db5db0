// Package testkit is what the tests of every package share: one fake
// clock (Clock, with Skewed for a machine whose clock is off), one API
// spy (APISpy), and the handlers an adapted Caddy config runs (Servers).
// The store contract is package tokenstore/storetest, the
// fleet scenarios package fleettest; both run on this Clock.
package testkit
