# Required labels: every workload must carry the labels listed in
# data.k8s.labels.required, each with a non-empty value.
package k8s.labels

deny contains msg if {
	some label in data.k8s.labels.required
	value := object.get(input.request.object.metadata, ["labels", label], "")
	value == ""
	msg := sprintf("missing required label %s", [label])
}
