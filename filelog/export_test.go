package filelog

// AppendEpochRecord exports the epochs file's record encoder to the
// external tests, which build damaged files with it.
var AppendEpochRecord = appendEpochRecord
