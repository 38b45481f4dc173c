# The floor of a decision: an answer of the same shape as
# data.consilium.authz.decision that reads the input but decides nothing.
# bench/policy/run.sh serves it next to the default bundle, and
# BenchmarkDecision asks both the embedded engine and the OPA server for
# it, to measure what the transport costs apart from the policy.
package trivial

decision := {
	"allow": input.action == "packet.read",
	"reasons": [],
	"obligations": {},
}
