// Package v1alpha1 contains the WorkflowTask API of the workflow.taskops.dev group.
// +kubebuilder:object:generate=true
// +groupName=workflow.taskops.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "workflow.taskops.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme (apimachinery's, so
	// that importing the API pulls in no controller-runtime).
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &WorkflowTask{}, &WorkflowTaskList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
