"""Listener and rule actions: ModifyListener / ModifyRule replace the whole action list,
forward limits, and target groups in use.

AWS pages:
- ModifyListener: https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_ModifyListener.html
- ModifyRule: https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_ModifyRule.html
- Action / TargetGroupTuple: https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetGroupTuple.html
- Quotas: https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html
- DeleteTargetGroup: https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeleteTargetGroup.html
"""

import unittest

from support import EmulatorTest, forward, unique

CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"

OIDC = {
    "Type": "authenticate-oidc",
    "Order": 1,
    "AuthenticateOidcConfig": {
        "Issuer": "https://idp.example.com",
        "AuthorizationEndpoint": "https://idp.example.com/authorize",
        "TokenEndpoint": "https://idp.example.com/token",
        "UserInfoEndpoint": "https://idp.example.com/userinfo",
        "ClientId": "conformance",
        "ClientSecret": "secret",
        "OnUnauthenticatedRequest": "authenticate",
    },
}
COGNITO = {
    "Type": "authenticate-cognito",
    "Order": 1,
    "AuthenticateCognitoConfig": {
        "UserPoolArn": "arn:aws:cognito-idp:us-east-1:000000000000:userpool/us-east-1_conform",
        "UserPoolClientId": "conformance",
        "UserPoolDomain": "conformance",
    },
}


def without_secrets(actions: list[dict]) -> list[dict]:
    """Actions as compared here: no ClientSecret (AWS need not return it)."""
    out = []
    for action in actions:
        action = dict(action)
        if "AuthenticateOidcConfig" in action:
            action["AuthenticateOidcConfig"] = {
                k: v for k, v in action["AuthenticateOidcConfig"].items() if k != "ClientSecret"
            }
        out.append(action)
    return out


class ListenerActionsTest(EmulatorTest):
    def https_listener(self, lb: str, actions: list[dict]) -> str:
        certificate = self.iam_certificate()
        arn = self.elbv2.create_listener(
            LoadBalancerArn=lb, Protocol="HTTPS", Port=443,
            Certificates=[{"CertificateArn": certificate}], DefaultActions=actions,
        )["Listeners"][0]["ListenerArn"]
        self.cleanup(self.elbv2.delete_listener, ListenerArn=arn)
        return arn

    def iam_certificate(self) -> str:
        from support import client

        iam = client("iam")
        name = unique()
        arn = iam.upload_server_certificate(
            ServerCertificateName=name, CertificateBody=CERTIFICATE, PrivateKey=KEY
        )["ServerCertificateMetadata"]["Arn"]
        self.cleanup(iam.delete_server_certificate, ServerCertificateName=name)
        return arn

    def default_actions(self, listener: str) -> list[dict]:
        return self.elbv2.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"]

    def test_modify_listener_replaces_the_whole_action_list(self):
        """ModifyListener's DefaultActions replace the listener's actions: an
        authenticate-oidc action (with Order) and a forward with
        TargetGroupStickinessConfig are stored and returned as given, and a later
        ModifyListener with one forward leaves only that forward.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_ModifyListener.html"""
        lb = self.load_balancer()
        blue, green = self.target_group(), self.target_group()
        listener = self.https_listener(lb, [forward([(blue, 1)])])
        sticky = {
            **forward([(blue, 90), (green, 10)],
                      TargetGroupStickinessConfig={"Enabled": True, "DurationSeconds": 300}),
            "Order": 2,
        }
        self.elbv2.modify_listener(ListenerArn=listener, DefaultActions=[OIDC, sticky])
        self.assertEqual(without_secrets(self.default_actions(listener)), without_secrets([OIDC, sticky]))
        only = forward([(green, 1)])
        self.elbv2.modify_listener(ListenerArn=listener, DefaultActions=[only])
        [action] = self.default_actions(listener)
        self.assertEqual(action["Type"], "forward")
        self.assertEqual(
            [(t["TargetGroupArn"], t["Weight"]) for t in action["ForwardConfig"]["TargetGroups"]],
            [(green, 1)],
        )
        self.assertNotIn("AuthenticateOidcConfig", action)

    def test_modify_rule_replaces_the_whole_action_list(self):
        """ModifyRule's Actions replace the rule's actions (authenticate-cognito with
        Order plus a forward, then a single forward).
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_ModifyRule.html"""
        lb = self.load_balancer()
        blue, green = self.target_group(), self.target_group()
        listener = self.https_listener(lb, [forward([(blue, 1)])])
        rule = self.elbv2.create_rule(
            ListenerArn=listener, Priority=10,
            Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/canary/*"]}}],
            Actions=[forward([(blue, 1)])],
        )["Rules"][0]["RuleArn"]
        actions = [COGNITO, {**forward([(blue, 5), (green, 5)]), "Order": 2}]
        self.elbv2.modify_rule(RuleArn=rule, Actions=actions)
        stored = self.elbv2.describe_rules(RuleArns=[rule])["Rules"][0]["Actions"]
        self.assertEqual([a["Type"] for a in stored], ["authenticate-cognito", "forward"])
        self.assertEqual(stored[0]["AuthenticateCognitoConfig"], COGNITO["AuthenticateCognitoConfig"])
        self.elbv2.modify_rule(RuleArn=rule, Actions=[forward([(green, 1)])])
        stored = self.elbv2.describe_rules(RuleArns=[rule])["Rules"][0]["Actions"]
        self.assertEqual([a["Type"] for a in stored], ["forward"])

    def test_at_most_five_target_groups_per_forward(self):
        """An Application Load Balancer forwards to at most 5 target groups per action
        ("Target groups per action: 5"); a sixth is a ValidationError.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html"""
        lb = self.load_balancer()
        groups = [self.target_group() for _ in range(6)]
        listener = self.listener(lb, groups[0])
        five = forward([(g, 1) for g in groups[:5]])
        self.elbv2.modify_listener(ListenerArn=listener, DefaultActions=[five])
        six = forward([(g, 1) for g in groups])
        self.assertError("ValidationError", self.elbv2.modify_listener, ListenerArn=listener, DefaultActions=[six])
        self.assertError(
            "ValidationError", self.elbv2.create_listener, LoadBalancerArn=lb, Protocol="HTTP",
            Port=8080, DefaultActions=[six],
        )
        self.assertError(
            "ValidationError", self.elbv2.create_rule, ListenerArn=listener, Priority=5,
            Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/x"]}}],
            Actions=[six],
        )

    def test_weights_between_0_and_999(self):
        """A target group's weight in a forward is 0 to 999 ("The range is 0 to 999");
        1000 or -1 is a ValidationError.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetGroupTuple.html"""
        lb = self.load_balancer()
        blue, green = self.target_group(), self.target_group()
        listener = self.listener(lb, blue)
        self.elbv2.modify_listener(ListenerArn=listener, DefaultActions=[forward([(blue, 0), (green, 999)])])
        for weight in (1000, -1):
            self.assertError(
                "ValidationError", self.elbv2.modify_listener, ListenerArn=listener,
                DefaultActions=[forward([(blue, 1), (green, weight)])],
            )

    def test_modify_listener_to_unknown_target_group(self):
        """ModifyListener forwarding to a target group that does not exist:
        TargetGroupNotFound.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_ModifyListener.html"""
        lb = self.load_balancer()
        blue = self.target_group()
        listener = self.listener(lb, blue)
        gone = blue.rsplit("/", 2)[0] + "/cf-gone/0123456789abcdef"
        self.assertError(
            "TargetGroupNotFound", self.elbv2.modify_listener, ListenerArn=listener,
            DefaultActions=[forward([(gone, 1)])],
        )

    def test_delete_target_group_in_use(self):
        """DeleteTargetGroup of a group a listener's default action (even at weight 0)
        or a rule forwards to: ResourceInUse.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeleteTargetGroup.html"""
        lb = self.load_balancer()
        blue, green, red = self.target_group(), self.target_group(), self.target_group()
        listener = self.listener(lb, blue, green, weights=[1, 0])
        self.elbv2.create_rule(
            ListenerArn=listener, Priority=7,
            Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/red"]}}],
            Actions=[{"Type": "forward", "TargetGroupArn": red}],
        )
        for arn in (blue, green, red):
            self.assertError("ResourceInUse", self.elbv2.delete_target_group, TargetGroupArn=arn)


if __name__ == "__main__":
    unittest.main()
