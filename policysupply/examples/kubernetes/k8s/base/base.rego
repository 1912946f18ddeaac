# Approved base images: the pod's base-image annotation (set by the image
# build pipeline) must name an approved base image.
package k8s.base

annotation := "policysupply.dev/base-image"

deny contains msg if {
	not input.request.object.metadata.annotations[annotation]
	msg := sprintf("missing annotation %s naming the base image", [annotation])
}

deny contains msg if {
	base := input.request.object.metadata.annotations[annotation]
	not base in data.k8s.base.approved
	msg := sprintf("base image %s is not approved", [base])
}
