"""Work done without timing a target: replaying drafters against recorded `ar` outputs, and the
store of those reference outputs."""
