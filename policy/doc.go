// Package policy decides every request to the Consilium gateway with an
// embedded Open Policy Agent, and manages the policy bundles that compliance
// officers upload and activate without a redeploy.
//
// # Deciding
//
// Build an [Engine] with [New] and call [Engine.Decide] with one [Input] per
// request. The [Decision] says allow or deny, why (reasons for both), and
// what the caller must do when it shares data (the [Obligations]:
// de-identification profile and options, sensitive labels to leave out,
// expiry). Decide is safe for concurrent use; it evaluates a prepared OPA
// query of the active bundle, and activation swaps that query atomically.
// The patient's consents enter the input normalised by [ConsentFromFHIR].
//
// # Bundles
//
// A bundle is what `opa build` makes: a tar.gz of Rego modules, data.json
// files and an optional .manifest. Every bundle must define the rule
// data.consilium.authz.decision (see [Entrypoint]) and carry *_test.rego
// tests that pass. The default bundle is embedded in the binary (package
// [github.com/consilium/consilium/policy/builtin]) and is version
// [BuiltinVersion]; it is active until another version is activated.
//
// With a store ([WithStore]) the engine also manages versions:
// [Engine.Upload] checks and stores a bundle (immutable per version),
// [Engine.List] lists them, [Engine.Activate] switches atomically (rollback
// is activating an older version) and [Engine.DryRun] replays recent
// decision inputs against a candidate. [Engine.Run] keeps an instance in
// step with the active version chosen by any other instance on the same
// store, and writes the decision inputs that DryRun replays.
//
// [Check] and [CheckDir] run the same checks offline; `consilium policy test`
// uses CheckDir.
package policy
