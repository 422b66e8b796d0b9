//! AWS's rules for the names and tag values immune sends, as the API references state
//! them. They are checked where the configuration is read (see `config::names`), so that
//! a release named `feat#12` is refused by `validate` and `plan` instead of by
//! CreateTargetGroup after a builder baked for half an hour.
//!
//! Each rule cites the page it comes from. Lengths are counted in characters (Unicode
//! scalar values), as the pages count them.

use unicode_general_category::{get_general_category, GeneralCategory};

/// One of AWS's rules for a string: how long it may be and which characters it may hold.
#[derive(Debug)]
pub struct Rule {
    /// The service that refuses what breaks the rule, for messages: "ELB", "EC2".
    pub service: &'static str,
    /// What the string is, for messages: "a target group name".
    pub what: &'static str,
    pub min: usize,
    pub max: usize,
    allowed: fn(char) -> bool,
    /// The allowed characters in words; `None` when any character is.
    pub characters: Option<&'static str>,
    /// Beginnings AWS refuses, compared without regard to case.
    refused_starts: &'static [&'static str],
    /// Not beginning or ending with a hyphen.
    hyphen_inside: bool,
    pub page: &'static str,
}

/// How a string breaks a [`Rule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breach {
    TooShort {
        length: usize,
    },
    TooLong {
        length: usize,
    },
    /// The first character the rule does not allow.
    Character(char),
    /// A beginning the rule refuses, as the rule spells it.
    Starts(&'static str),
    /// Begins or ends with a hyphen.
    Hyphen,
}

impl Rule {
    pub fn check(&self, value: &str) -> Result<(), Breach> {
        let length = value.chars().count();
        if length < self.min {
            return Err(Breach::TooShort { length });
        }
        if length > self.max {
            return Err(Breach::TooLong { length });
        }
        if let Some(c) = value.chars().find(|c| !(self.allowed)(*c)) {
            return Err(Breach::Character(c));
        }
        let lower = value.to_lowercase();
        if let Some(start) = self.refused_starts.iter().find(|s| lower.starts_with(*s)) {
            return Err(Breach::Starts(start));
        }
        if self.hyphen_inside && (value.starts_with('-') || value.ends_with('-')) {
            return Err(Breach::Hyphen);
        }
        Ok(())
    }

    /// The rule in words: "a target group name has 1 to 32 characters: letters, digits
    /// and hyphens, not beginning or ending with a hyphen".
    pub fn describe(&self) -> String {
        let mut text = match self.min {
            0 => format!("{} has at most {} characters", self.what, self.max),
            min => format!("{} has {min} to {} characters", self.what, self.max),
        };
        if let Some(characters) = self.characters {
            text += &format!(": {characters}");
        }
        if self.hyphen_inside {
            text += ", not beginning or ending with a hyphen";
        }
        for start in self.refused_starts {
            text += &format!(", not beginning with `{start}`");
        }
        text
    }

    /// `value` with each character the rule does not allow replaced by a hyphen (or an
    /// underscore where hyphens are not allowed either): what a fix may look like.
    pub fn mend(&self, value: &str) -> String {
        let stand_in = if (self.allowed)('-') { '-' } else { '_' };
        value
            .chars()
            .map(|c| if (self.allowed)(c) { c } else { stand_in })
            .collect()
    }
}

impl Breach {
    /// What is wrong, to follow the value in a message: "holds `#`".
    pub fn describe(&self, rule: &Rule) -> String {
        match self {
            Breach::TooShort { length: 0 } => "is empty".into(),
            Breach::TooShort { length } => format!(
                "has {length} character{}, fewer than the {} {} wants",
                if *length == 1 { "" } else { "s" },
                rule.min,
                rule.service
            ),
            Breach::TooLong { length } => format!(
                "has {length} characters, more than the {} {} allows",
                rule.max, rule.service
            ),
            Breach::Character(c) if c.is_control() || c.is_whitespace() => {
                format!("holds the character U+{:04X}", *c as u32)
            }
            Breach::Character(c) => format!("holds `{c}`"),
            Breach::Starts(start) => format!("begins with `{start}`"),
            Breach::Hyphen => "begins or ends with a hyphen".into(),
        }
    }
}

/// `\p{L}`, `\p{Z}` and `\p{N}` of the ELB tag pattern, by general category: std's
/// `is_alphabetic` would also let through marks (U+093F) that `\p{L}` does not.
fn letter_space_or_number(c: char) -> bool {
    use GeneralCategory::*;
    matches!(
        get_general_category(c),
        UppercaseLetter
            | LowercaseLetter
            | TitlecaseLetter
            | ModifierLetter
            | OtherLetter
            | SpaceSeparator
            | LineSeparator
            | ParagraphSeparator
            | DecimalNumber
            | LetterNumber
            | OtherNumber
    )
}

/// The pattern `^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`.
fn elb_tag_character(c: char) -> bool {
    letter_space_or_number(c) || "_.:/=+-@".contains(c)
}

/// The pattern `[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\r\n\t]*` of Auto
/// Scaling's strings: any character XML can carry (a `char` is never a lone surrogate).
fn xml_character(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

fn any_character(_: char) -> bool {
    true
}

const ELB_TAG_CHARACTERS: &str = "letters, digits, spaces and _ . : / = + - @";

/// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html
/// Key: 1 to 128 characters, pattern `^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`. The `aws:`
/// prefix is reserved on every service's tags (see the EC2 page below).
pub const ELB_TAG_KEY: Rule = Rule {
    service: "ELB",
    what: "a target group's tag key",
    min: 1,
    max: 128,
    allowed: elb_tag_character,
    characters: Some(ELB_TAG_CHARACTERS),
    refused_starts: &["aws:"],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html",
};

/// Same page: Value, 0 to 256 characters of the same pattern.
pub const ELB_TAG_VALUE: Rule = Rule {
    service: "ELB",
    what: "a target group's tag value",
    min: 0,
    max: 256,
    allowed: elb_tag_character,
    characters: Some(ELB_TAG_CHARACTERS),
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html",
};

/// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
/// Keys of at most 128 characters, values of at most 256; EC2 allows any character
/// (only instance tags exposed in instance metadata are narrower, and immune does not
/// expose them); the `aws:` prefix is reserved for AWS's own tags.
pub const EC2_TAG_KEY: Rule = Rule {
    service: "EC2",
    what: "an EC2 tag key",
    min: 1,
    max: 128,
    allowed: any_character,
    characters: None,
    refused_starts: &["aws:"],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions",
};

pub const EC2_TAG_VALUE: Rule = Rule {
    service: "EC2",
    what: "an EC2 tag value",
    min: 0,
    max: 256,
    allowed: any_character,
    characters: None,
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions",
};

const XML_CHARACTERS: &str =
    "any characters but control characters other than tab, line feed and carriage return";

/// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_Tag.html
/// Key: 1 to 128 characters; Value: 0 to 256; both of the pattern
/// `[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\r\n\t]*`.
pub const AUTOSCALING_TAG_KEY: Rule = Rule {
    service: "Auto Scaling",
    what: "an Auto Scaling group's tag key",
    min: 1,
    max: 128,
    allowed: xml_character,
    characters: Some(XML_CHARACTERS),
    refused_starts: &["aws:"],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_Tag.html",
};

pub const AUTOSCALING_TAG_VALUE: Rule = Rule {
    service: "Auto Scaling",
    what: "an Auto Scaling group's tag value",
    min: 0,
    max: 256,
    allowed: xml_character,
    characters: Some(XML_CHARACTERS),
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_Tag.html",
};

/// https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Tag.html
/// Key: 1 to 128 characters; Value: 0 to 256; no pattern.
pub const CLOUDWATCH_TAG_KEY: Rule = Rule {
    service: "CloudWatch",
    what: "an alarm's tag key",
    min: 1,
    max: 128,
    allowed: any_character,
    characters: None,
    refused_starts: &["aws:"],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Tag.html",
};

pub const CLOUDWATCH_TAG_VALUE: Rule = Rule {
    service: "CloudWatch",
    what: "an alarm's tag value",
    min: 0,
    max: 256,
    allowed: any_character,
    characters: None,
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Tag.html",
};

/// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
/// "Constraints: 3-128 alphanumeric characters, parentheses (()), square brackets ([]),
/// spaces ( ), periods (.), slashes (/), dashes (-), single quotes ('), at-signs (@), or
/// underscores(_)".
pub const AMI_NAME: Rule = Rule {
    service: "EC2",
    what: "an AMI name",
    min: 3,
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c),
    characters: Some("letters, digits, spaces and ( ) [ ] . / - ' @ _"),
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html",
};

/// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html
/// "can have a maximum of 32 characters, must contain only alphanumeric characters or
/// hyphens, and must not begin or end with a hyphen". (`internal-` is refused only at
/// the beginning of a load balancer's name, API_CreateLoadBalancer.html.)
pub const TARGET_GROUP_NAME: Rule = Rule {
    service: "ELB",
    what: "a target group name",
    min: 1,
    max: 32,
    allowed: |c| c.is_ascii_alphanumeric() || c == '-',
    characters: Some("letters, digits and hyphens"),
    refused_starts: &[],
    hyphen_inside: true,
    page: "https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html",
};

/// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplate.html
/// LaunchTemplateName: 3 to 128 characters, pattern `[a-zA-Z0-9\(\)\.\-/_]+`.
pub const LAUNCH_TEMPLATE_NAME: Rule = Rule {
    service: "EC2",
    what: "a launch template name",
    min: 3,
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || "().-/_".contains(c),
    characters: Some("letters, digits and ( ) . - / _"),
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplate.html",
};

/// Same page: VersionDescription, at most 255 characters. Immune writes the release's
/// group name there and finds the version by it.
pub const LAUNCH_TEMPLATE_VERSION_DESCRIPTION: Rule = Rule {
    service: "EC2",
    what: "a launch template version's description",
    min: 0,
    max: 255,
    allowed: any_character,
    characters: None,
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplate.html",
};

/// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html
/// AutoScalingGroupName: 1 to 255 characters; "The name can contain any ASCII character
/// 33 to 126 including most punctuation characters, digits, and upper and lowercased
/// letters. You cannot use a colon (:) in the name."
pub const AUTO_SCALING_GROUP_NAME: Rule = Rule {
    service: "Auto Scaling",
    what: "an Auto Scaling group name",
    min: 1,
    max: 255,
    allowed: |c| c.is_ascii_graphic() && c != ':',
    characters: Some("printable ASCII characters but spaces and colons"),
    refused_starts: &[],
    hyphen_inside: false,
    page:
        "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html",
};

/// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_PutScalingPolicy.html
/// PolicyName: 1 to 255 characters of the XML pattern above.
pub const SCALING_POLICY_NAME: Rule = Rule {
    service: "Auto Scaling",
    what: "a scaling policy name",
    min: 1,
    max: 255,
    allowed: xml_character,
    characters: Some(XML_CHARACTERS),
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_PutScalingPolicy.html",
};

/// https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
/// AlarmName: 1 to 255 characters; "The name must contain only UTF-8 characters, and
/// can't contain ASCII control characters".
pub const ALARM_NAME: Rule = Rule {
    service: "CloudWatch",
    what: "an alarm name",
    min: 1,
    max: 255,
    allowed: |c| !c.is_ascii_control(),
    characters: Some("any characters but ASCII control characters"),
    refused_starts: &[],
    hyphen_inside: false,
    page:
        "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html",
};

/// Same page: Namespace, 1 to 255 characters, pattern `[^:].*` (no colon first, and
/// `.` takes no line break).
pub const METRIC_NAMESPACE: Rule = Rule {
    service: "CloudWatch",
    what: "a metric namespace",
    min: 1,
    max: 255,
    allowed: |c| c != '\n' && c != '\r',
    characters: Some("any characters but line breaks"),
    refused_starts: &[":"],
    hyphen_inside: false,
    page:
        "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html",
};

/// Same page: MetricName, 1 to 255 characters.
pub const METRIC_NAME: Rule = Rule {
    service: "CloudWatch",
    what: "a metric name",
    min: 1,
    max: 255,
    allowed: any_character,
    characters: None,
    refused_starts: &[],
    hyphen_inside: false,
    page:
        "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html",
};

/// https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html
/// Name: 1 to 255 characters.
pub const DIMENSION_NAME: Rule = Rule {
    service: "CloudWatch",
    what: "a dimension name",
    min: 1,
    max: 255,
    allowed: any_character,
    characters: None,
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html",
};

/// Same page: Value, 1 to 1024 characters.
pub const DIMENSION_VALUE: Rule = Rule {
    service: "CloudWatch",
    what: "a dimension value",
    min: 1,
    max: 1024,
    allowed: any_character,
    characters: None,
    refused_starts: &[],
    hyphen_inside: false,
    page: "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn elb_tag_values_take_unicode_letters_numbers_and_spaces_and_eight_marks() {
        for ok in [
            "",
            "v42",
            "feat/12 rc:1 a=b+c@d_e.f-g",
            "Überprüfung",
            "日本語",
            "ελληνικά",
            "٣٤",       // Arabic-Indic digits: \p{N}
            "Ⅻ",        // a Roman numeral: \p{Nl}
            "a\u{a0}b", // no-break space: \p{Zs}
        ] {
            assert_eq!(ELB_TAG_VALUE.check(ok), Ok(()), "{ok:?}");
        }
        for (bad, c) in [
            ("feat#12", '#'),
            ("a,b", ','),
            ("tab\there", '\t'),
            ("50%", '%'),
            ("emoji🚀", '🚀'),
            // A vowel sign is a mark (\p{Mc}), not a letter, although it is alphabetic.
            ("हि", 'ि'),
        ] {
            assert_eq!(
                ELB_TAG_VALUE.check(bad),
                Err(Breach::Character(c)),
                "{bad:?}"
            );
        }
        assert_eq!(ELB_TAG_VALUE.check(&chars(256)), Ok(()));
        assert_eq!(
            ELB_TAG_VALUE.check(&chars(257)),
            Err(Breach::TooLong { length: 257 })
        );
        // Characters, not bytes: 256 two-byte letters fit.
        assert_eq!(ELB_TAG_VALUE.check(&"é".repeat(256)), Ok(()));
        assert_eq!(ELB_TAG_VALUE.mend("feat#12"), "feat-12");
    }

    #[test]
    fn elb_tag_keys_have_1_to_128_characters_and_no_aws_prefix() {
        assert_eq!(ELB_TAG_KEY.check("team"), Ok(()));
        assert_eq!(ELB_TAG_KEY.check(&chars(128)), Ok(()));
        assert_eq!(
            ELB_TAG_KEY.check(&chars(129)),
            Err(Breach::TooLong { length: 129 })
        );
        assert_eq!(ELB_TAG_KEY.check(""), Err(Breach::TooShort { length: 0 }));
        assert_eq!(ELB_TAG_KEY.check("AWS:team"), Err(Breach::Starts("aws:")));
        assert_eq!(
            ELB_TAG_KEY.check("cost#center"),
            Err(Breach::Character('#'))
        );
    }

    #[test]
    fn ec2_tags_take_any_character_within_their_lengths() {
        assert_eq!(EC2_TAG_VALUE.check("feat#12, 50% 🚀"), Ok(()));
        assert_eq!(EC2_TAG_VALUE.check(&chars(256)), Ok(()));
        assert_eq!(
            EC2_TAG_VALUE.check(&chars(257)),
            Err(Breach::TooLong { length: 257 })
        );
        assert_eq!(EC2_TAG_KEY.check(&chars(128)), Ok(()));
        assert_eq!(
            EC2_TAG_KEY.check(&chars(129)),
            Err(Breach::TooLong { length: 129 })
        );
        assert_eq!(EC2_TAG_KEY.check("aws:x"), Err(Breach::Starts("aws:")));
        assert_eq!(EC2_TAG_KEY.check("Aws:x"), Err(Breach::Starts("aws:")));
        assert_eq!(EC2_TAG_KEY.check("my-aws:x"), Ok(()));
    }

    #[test]
    fn auto_scaling_tags_take_what_xml_carries() {
        assert_eq!(AUTOSCALING_TAG_VALUE.check("feat#12\ttab"), Ok(()));
        assert_eq!(
            AUTOSCALING_TAG_VALUE.check("bell\u{7}"),
            Err(Breach::Character('\u{7}'))
        );
        assert_eq!(
            AUTOSCALING_TAG_VALUE.check("\u{FFFE}"),
            Err(Breach::Character('\u{FFFE}'))
        );
        assert_eq!(AUTOSCALING_TAG_VALUE.check(&chars(256)), Ok(()));
        assert_eq!(
            AUTOSCALING_TAG_VALUE.check(&chars(257)),
            Err(Breach::TooLong { length: 257 })
        );
        assert_eq!(
            AUTOSCALING_TAG_KEY.check(&chars(129)),
            Err(Breach::TooLong { length: 129 })
        );
    }

    #[test]
    fn cloudwatch_tags_are_limited_by_length_only() {
        assert_eq!(CLOUDWATCH_TAG_VALUE.check("feat#12"), Ok(()));
        assert_eq!(
            CLOUDWATCH_TAG_VALUE.check(&chars(257)),
            Err(Breach::TooLong { length: 257 })
        );
        assert_eq!(
            CLOUDWATCH_TAG_KEY.check(""),
            Err(Breach::TooShort { length: 0 })
        );
    }

    #[test]
    fn ami_names_have_3_to_128_of_letters_digits_and_eight_marks() {
        for ok in [
            "web",
            "web-v001",
            "web (feat/12) [rc] it's @home_1.0",
            &chars(128),
        ] {
            assert_eq!(AMI_NAME.check(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(AMI_NAME.check("ab"), Err(Breach::TooShort { length: 2 }));
        assert_eq!(
            AMI_NAME.check(&chars(129)),
            Err(Breach::TooLong { length: 129 })
        );
        assert_eq!(AMI_NAME.check("web-feat#12"), Err(Breach::Character('#')));
        assert_eq!(AMI_NAME.check("web:v1"), Err(Breach::Character(':')));
        // "Alphanumeric" read as ASCII, like the other characters the page lists.
        assert_eq!(AMI_NAME.check("café"), Err(Breach::Character('é')));
        assert_eq!(AMI_NAME.mend("web-feat#12"), "web-feat-12");
    }

    #[test]
    fn target_group_names_have_1_to_32_letters_digits_and_inner_hyphens() {
        let at_32 = format!("{}-v001", chars(27));
        assert_eq!(at_32.len(), 32);
        assert_eq!(TARGET_GROUP_NAME.check(&at_32), Ok(()));
        let at_33 = format!("{}-v1000", chars(27));
        assert_eq!(
            TARGET_GROUP_NAME.check(&at_33),
            Err(Breach::TooLong { length: 33 })
        );
        assert_eq!(TARGET_GROUP_NAME.check("a"), Ok(()));
        assert_eq!(
            TARGET_GROUP_NAME.check(""),
            Err(Breach::TooShort { length: 0 })
        );
        assert_eq!(TARGET_GROUP_NAME.check("-web"), Err(Breach::Hyphen));
        assert_eq!(TARGET_GROUP_NAME.check("web-"), Err(Breach::Hyphen));
        assert_eq!(TARGET_GROUP_NAME.check("internal-v001"), Ok(()));
        assert_eq!(
            TARGET_GROUP_NAME.check("web_v001"),
            Err(Breach::Character('_'))
        );
    }

    #[test]
    fn launch_template_names_have_3_to_128_of_letters_digits_and_five_marks() {
        assert_eq!(LAUNCH_TEMPLATE_NAME.check("web/blue_(1).x-y"), Ok(()));
        assert_eq!(
            LAUNCH_TEMPLATE_NAME.check("f1"),
            Err(Breach::TooShort { length: 2 })
        );
        assert_eq!(LAUNCH_TEMPLATE_NAME.check(&chars(128)), Ok(()));
        assert_eq!(
            LAUNCH_TEMPLATE_NAME.check(&chars(129)),
            Err(Breach::TooLong { length: 129 })
        );
        assert_eq!(
            LAUNCH_TEMPLATE_NAME.check("web app"),
            Err(Breach::Character(' '))
        );
        assert_eq!(
            LAUNCH_TEMPLATE_VERSION_DESCRIPTION.check(&chars(256)),
            Err(Breach::TooLong { length: 256 })
        );
    }

    #[test]
    fn auto_scaling_group_names_are_printable_ascii_without_colons() {
        assert_eq!(AUTO_SCALING_GROUP_NAME.check("web-v001"), Ok(()));
        assert_eq!(AUTO_SCALING_GROUP_NAME.check(&chars(255)), Ok(()));
        assert_eq!(
            AUTO_SCALING_GROUP_NAME.check(&chars(256)),
            Err(Breach::TooLong { length: 256 })
        );
        assert_eq!(
            AUTO_SCALING_GROUP_NAME.check("web:v1"),
            Err(Breach::Character(':'))
        );
        assert_eq!(
            AUTO_SCALING_GROUP_NAME.check("web v1"),
            Err(Breach::Character(' '))
        );
    }

    #[test]
    fn alarm_and_policy_names_have_1_to_255_characters() {
        assert_eq!(ALARM_NAME.check("web-v001-p99 latency #1 🚀"), Ok(()));
        assert_eq!(ALARM_NAME.check(&chars(255)), Ok(()));
        assert_eq!(
            ALARM_NAME.check(&chars(256)),
            Err(Breach::TooLong { length: 256 })
        );
        assert_eq!(ALARM_NAME.check("a\nb"), Err(Breach::Character('\n')));
        assert_eq!(SCALING_POLICY_NAME.check(&chars(255)), Ok(()));
        assert_eq!(
            SCALING_POLICY_NAME.check(&chars(256)),
            Err(Breach::TooLong { length: 256 })
        );
        assert_eq!(
            SCALING_POLICY_NAME.check("cpu\u{0}"),
            Err(Breach::Character('\u{0}'))
        );
    }

    #[test]
    fn metric_names_namespaces_and_dimensions() {
        assert_eq!(METRIC_NAMESPACE.check("AWS/ApplicationELB"), Ok(()));
        assert_eq!(METRIC_NAMESPACE.check(":x"), Err(Breach::Starts(":")));
        assert_eq!(
            METRIC_NAME.check(&chars(256)),
            Err(Breach::TooLong { length: 256 })
        );
        assert_eq!(
            DIMENSION_NAME.check(""),
            Err(Breach::TooShort { length: 0 })
        );
        assert_eq!(DIMENSION_VALUE.check(&chars(1024)), Ok(()));
        assert_eq!(
            DIMENSION_VALUE.check(&chars(1025)),
            Err(Breach::TooLong { length: 1025 })
        );
    }

    #[test]
    fn rules_and_breaches_read_as_sentences() {
        assert_eq!(
            TARGET_GROUP_NAME.describe(),
            "a target group name has 1 to 32 characters: letters, digits and hyphens, not beginning or ending with a hyphen"
        );
        assert_eq!(
            ELB_TAG_VALUE.describe(),
            "a target group's tag value has at most 256 characters: letters, digits, spaces and _ . : / = + - @"
        );
        assert_eq!(
            Breach::TooLong { length: 33 }.describe(&TARGET_GROUP_NAME),
            "has 33 characters, more than the 32 ELB allows"
        );
        assert_eq!(
            Breach::TooShort { length: 2 }.describe(&LAUNCH_TEMPLATE_NAME),
            "has 2 characters, fewer than the 3 EC2 wants"
        );
        assert_eq!(
            Breach::Character('\t').describe(&ELB_TAG_VALUE),
            "holds the character U+0009"
        );
    }
}
