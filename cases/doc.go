// Package cases owns the second-opinion workflow: the case record and its
// state machine, the specialist directory, the opinions specialists send
// back and the names of the packets built for them.
//
// A case is opened by a hospital for one of its patients (draft), gets one
// or more specialists (assigned), is released to them (released: each
// specialist may pull a packet built for it), receives opinions
// (opinion-received) and ends closed or cancelled. [Transition] is the one
// place that says which step may follow which; the gateway answers 409 for
// anything else ([ErrIllegalTransition]).
//
// Everything is kept in a storage.Store, which the gateway passes
// encrypted: a case holds the hospital's patient reference. Object names
// carry case ids (random, no meaning) and principal ids, never patient
// data. Updates are compare-and-swap on the object's ETag, so several
// gateway instances on one store never lose each other's changes.
//
// Where to start: [Store.Create], [Store.Update] (with a function that
// calls [Case.Apply]), [Store.List]; [Directory.Register] and
// [Directory.Search] for specialists; [Store.PutOpinion] and
// [Store.Opinions].
package cases
