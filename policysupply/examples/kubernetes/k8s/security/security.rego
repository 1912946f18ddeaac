# No privileged containers, and no privilege escalation.
package k8s.security

import data.k8s.images

deny contains msg if {
	some c in images.containers
	c.securityContext.privileged == true
	msg := sprintf("container %s: privileged mode is not allowed", [c.name])
}

deny contains msg if {
	some c in images.containers
	c.securityContext.allowPrivilegeEscalation == true
	msg := sprintf("container %s: allowPrivilegeEscalation must be false", [c.name])
}
