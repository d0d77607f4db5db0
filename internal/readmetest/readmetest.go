// Package readmetest compiles the Go snippets of the repository's
// README.md, so that what users copy builds. The test is the package: see
// readme_test.go for the conventions a ```go block follows.
package readmetest
