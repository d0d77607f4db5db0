package tokenstore

// The file envelope codec, for the fuzz tests of package tokenstore_test.
var (
	DecodeFileRecord = decodeFileRecord
	AppendFileRecord = appendFileRecord
)
