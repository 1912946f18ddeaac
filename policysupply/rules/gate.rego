# policysupply's default deployment gate.
#
# Input (schema policysupply.gate/v1), built by policysupply.Gate:
#   input.image         {reference, registry, repository, name, tag, digest}
#   input.verification  {verified, error, error_type, message, key_ids, signers,
#                        signatures: [{key_id, scheme, annotations, identity,
#                                      signed_at, witnessed_at, log_index}],
#                        attestations: [{predicate_type, predicate, key_id, identity}]}
#                       identity: null for keys, {issuer, subject, matched} keyless
#   input.context       whatever the caller passed (not read by these rules)
#
# Settings live in data.policysupply.gate.settings (data.json beside this file;
# Gate(settings=...) overlays them). Each deny entry names its rule.
package policysupply.gate

import rego.v1

# The settings document (data.json), not a rule.
import data.policysupply.gate.settings

# Messages are built with concat, not sprintf: the embedded engine's sprintf
# quotes computed strings ("%s" of a concat result).

default allow := false

allow if count(deny) == 0

# The whole decision in one document, so one query answers it.
decision := {"allow": allow, "deny": deny}

# -- signatures ---------------------------------------------------------------

deny contains violation("unsigned", concat("", ["no signature on ", input.image.reference])) if {
	input.verification.error == "no_signature"
}

deny contains violation("untrusted_signer", concat("", ["untrusted signer: ", input.verification.message])) if {
	input.verification.error == "untrusted_signature"
}

deny contains violation("signature_threshold", input.verification.message) if {
	input.verification.error == "threshold_not_met"
}

deny contains violation("verification", input.verification.message) if {
	not input.verification.verified
	not input.verification.error in {"no_signature", "untrusted_signature", "threshold_not_met"}
}

# -- identities (keyless signers) -----------------------------------------------

deny contains violation("required_identities", msg) if {
	input.verification.verified
	count(settings.required_identities) > 0
	not some_identity_allowed
	msg := concat("", [
		"no signature from a required identity (required: ",
		concat(", ", [describe_identity(w) | some w in settings.required_identities]),
		"; signed by: ", signers, ")",
	])
}

some_identity_allowed if {
	some want in settings.required_identities
	some sig in input.verification.signatures
	identity_matches(want, object.get(sig, "identity", null))
}

identity_matches(want, got) if {
	is_object(got)
	text_matches(want, "issuer", got.issuer)
	some subject in subjects(got)
	text_matches(want, "subject", subject)
}

# A certificate's subject and every Subject Alternative Name it carries.
subjects(got) := {got.subject} | {s | some s in object.get(got, "sans", [])}

text_matches(want, field, value) if value == want[field]

# A *_regex must match the whole value, never a part of it.
text_matches(want, field, value) if {
	pattern := want[concat("", [field, "_regex"])]
	regex.match(concat("", ["^(?:", pattern, ")$"]), value)
}

describe_identity(w) := concat("", [show(w, "subject"), " from ", show(w, "issuer")])

show(w, field) := w[field]

show(w, field) := concat("", ["/", w[concat("", [field, "_regex"])], "/"])

signers := concat(", ", [describe_signer(sig) | some sig in input.verification.signatures]) if {
	count(input.verification.signatures) > 0
} else := "nobody"

describe_signer(sig) := concat("", [sig.identity.subject, " from ", sig.identity.issuer]) if {
	is_object(sig.identity)
} else := concat("", ["key ", sig.key_id])

# -- attestations -----------------------------------------------------------------

deny contains violation("required_attestations", concat("", ["no verified attestation of type ", want])) if {
	input.verification.verified
	some want in settings.required_attestations
	not attested(want)
}

attested(predicate_type) if {
	some att in input.verification.attestations
	att.predicate_type == predicate_type
}

# -- where the image comes from ------------------------------------------------

deny contains violation("allowed_registries", msg) if {
	count(settings.allowed_registries) > 0
	not registry_allowed
	msg := concat("", [
		input.image.name, " is not from an allowed registry (allowed: ",
		concat(", ", settings.allowed_registries), ")",
	])
}

# An entry is a host ("ghcr.io") or a host and repository prefix
# ("ghcr.io/acme"); it matches whole path components only.
registry_allowed if {
	some entry in settings.allowed_registries
	name_under(input.image.name, trim_suffix(entry, "/"))
}

name_under(name, prefix) if name == prefix

name_under(name, prefix) if startswith(name, concat("", [prefix, "/"]))

violation(rule, message) := {"rule": rule, "message": message}
