// Package testkit is what the tests of every package share: one fake
// clock (Clock, with Skewed for a machine whose clock is off) and one API
// spy (APISpy). The store contract is package tokenstore/storetest, the
// fleet scenarios package fleettest; both run on this Clock.
package testkit
