# Image allow-list: every container image must come from an allowed registry
# and be pinned to a tag other than "latest" (or to a digest).
package k8s.images

containers contains c if {
	some c in input.request.object.spec.containers
}

containers contains c if {
	some c in input.request.object.spec.initContainers
}

allowed(image) if {
	some prefix in data.k8s.images.allowed_registries
	startswith(image, prefix)
}

deny contains msg if {
	some c in containers
	not allowed(c.image)
	msg := sprintf("container %s: image %s is not from an allowed registry", [c.name, c.image])
}

deny contains msg if {
	some c in containers
	endswith(c.image, ":latest")
	msg := sprintf("container %s: image %s uses the mutable tag latest", [c.name, c.image])
}
