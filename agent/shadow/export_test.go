package shadow

// StateSize exposes stateSize to the external tests.
var StateSize = stateSize
