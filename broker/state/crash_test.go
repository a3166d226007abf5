package state

const crashChildEnv = "GATEWAYD_STATE_CRASH_CHILD"

func crashChild() {}
