package testenv

import (
	"context"
	"fmt"
	"path/filepath"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// InstallUserRoles creates the roles config/rbac gives people (workflowtask-editor-role and
// workflowtask-viewer-role, labeled to aggregate into the built-in admin, edit and view), as
// config/operator names them, and aggregates those built-in roles (AggregateClusterRole): a user
// bound to edit then holds what a user of a real cluster does.
func InstallUserRoles(ctx context.Context, c client.Client) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	for _, file := range []string{"workflowtask_editor_role.yaml", "workflowtask_viewer_role.yaml"} {
		role := &rbacv1.ClusterRole{}
		if err := readManifest(filepath.Join(root, "config", "rbac", file), role); err != nil {
			return err
		}
		role.Name = "workflowtask-" + role.Name // config/operator's namePrefix
		if err := c.Create(ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating ClusterRole %s: %w", role.Name, err)
		}
	}
	for _, name := range []string{"admin", "edit", "view"} {
		if err := AggregateClusterRole(ctx, c, name); err != nil {
			return err
		}
	}
	return nil
}

// AggregateClusterRole does for one ClusterRole with an aggregationRule what
// kube-controller-manager's clusterrole-aggregation controller does (envtest runs none): its
// rules become those of every ClusterRole its selectors match, in name order, without repeats.
func AggregateClusterRole(ctx context.Context, c client.Client, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		role := &rbacv1.ClusterRole{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, role); err != nil {
			return fmt.Errorf("getting ClusterRole %s: %w", name, err)
		}
		if role.AggregationRule == nil {
			return fmt.Errorf("ClusterRole %s has no aggregationRule", name)
		}
		var rules []rbacv1.PolicyRule
		for _, sel := range role.AggregationRule.ClusterRoleSelectors {
			selector, err := metav1.LabelSelectorAsSelector(&sel)
			if err != nil {
				return fmt.Errorf("ClusterRole %s: %w", name, err)
			}
			list := &rbacv1.ClusterRoleList{}
			if err := c.List(ctx, list, client.MatchingLabelsSelector{Selector: selector}); err != nil {
				return fmt.Errorf("listing the ClusterRoles aggregated into %s: %w", name, err)
			}
			for _, r := range list.Items {
				if r.Name == name {
					continue
				}
				for _, rule := range r.Rules {
					if !containsRule(rules, rule) {
						rules = append(rules, rule)
					}
				}
			}
		}
		if equality.Semantic.DeepEqual(role.Rules, rules) {
			return nil
		}
		role.Rules = rules
		if err := c.Update(ctx, role); err != nil {
			return fmt.Errorf("aggregating ClusterRole %s: %w", name, err)
		}
		return nil
	})
}

func containsRule(rules []rbacv1.PolicyRule, rule rbacv1.PolicyRule) bool {
	for _, r := range rules {
		if equality.Semantic.DeepEqual(r, rule) {
			return true
		}
	}
	return false
}
