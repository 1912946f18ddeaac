# Entry point for admission decisions: collects every violation from the
# individual rule sets. Query data.k8s.admission.deny (reasons) or
# data.k8s.admission.allow (true when there are none).
package k8s.admission

import data.k8s.base
import data.k8s.images
import data.k8s.labels
import data.k8s.security

deny contains msg if {
	some msg in images.deny
}

deny contains msg if {
	some msg in labels.deny
}

deny contains msg if {
	some msg in security.deny
}

deny contains msg if {
	some msg in base.deny
}

default allow := false

allow if count(deny) == 0
