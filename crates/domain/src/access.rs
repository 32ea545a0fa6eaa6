//! Who may do what (DESIGN.md section 7): callers named by their certificates, and the one
//! decision every service asks before it acts, taken against the data the call touches.

use std::fmt;

use crate::Region;

/// The caller of a call, as its client certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A provincial platform (`province:370000`); the code is a province's.
    Province(Region),
    /// The national platform (`national`).
    National,
    /// An operator of the clearinghouse (`operator`).
    Operator,
    /// One of our own services calling another (`service:settlement`).
    Service(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` names no caller (expected province:<code>, national, operator or service:<name>)")]
pub struct UnknownCaller(pub String);

impl Caller {
    pub fn parse(identity: &str) -> Result<Self, UnknownCaller> {
        let unknown = || UnknownCaller(identity.chars().take(64).collect());
        match identity {
            "national" => Ok(Self::National),
            "operator" => Ok(Self::Operator),
            _ => {
                if let Some(code) = identity.strip_prefix("province:") {
                    let region = Region::parse(code).map_err(|_| unknown())?;
                    if !region.is_province() {
                        return Err(unknown());
                    }
                    Ok(Self::Province(region))
                } else if let Some(name) = identity.strip_prefix("service:") {
                    let valid = (1..=32).contains(&name.len())
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if valid {
                        Ok(Self::Service(name.to_string()))
                    } else {
                        Err(unknown())
                    }
                } else {
                    Err(unknown())
                }
            }
        }
    }

    fn province_contains(&self, region: Region) -> bool {
        matches!(self, Self::Province(p) if p.contains(region))
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Province(p) => write!(f, "province:{p}"),
            Self::National => f.write_str("national"),
            Self::Operator => f.write_str("operator"),
            Self::Service(name) => write!(f, "service:{name}"),
        }
    }
}

/// What a call does, with the regions of the data it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The insured place's writes: persons, filings, referrals, policies, personal-account
    /// credits.
    WriteAsInsured { insured: Region },
    /// The treatment place's writes: pre-settle, settle, reverse, catalogues.
    WriteAsTreatment { treatment: Region },
    /// A person's own records as a whole: the person, their lists of filings, referrals
    /// and claims, their accumulators.
    ReadPerson { insured: Region },
    /// One filing, referral or claim: its insured or its treatment place.
    ReadCase { insured: Region, treatment: Region },
    /// Whether a person may be treated somewhere: either place, or our settlement service
    /// when its projection has no answer.
    CheckEligibility { insured: Region, treatment: Region },
    /// Policies and catalogues: public to every authenticated caller.
    ReadReference,
    /// A province's own money: topping up its reserves, confirming or disputing its
    /// statement.
    WriteOwnAccount { province: Region },
    /// Reading balances, entries, reserves or a statement: of one province (`Some`) or of
    /// all (`None`).
    ReadAccounts { province: Option<Region> },
    /// Running clearing: closing periods, sizing reserves.
    OperateClearing,
    /// Supervision: reconciling, reading the audit trail.
    Supervise,
}

/// Whether `caller` may do `action`.
pub fn permits(caller: &Caller, action: Action) -> bool {
    use Caller::{National, Operator, Province, Service};
    match action {
        Action::WriteAsInsured { insured } => caller.province_contains(insured),
        Action::WriteAsTreatment { treatment } => caller.province_contains(treatment),
        Action::ReadPerson { insured } => *caller == National || caller.province_contains(insured),
        Action::ReadCase { insured, treatment } => {
            *caller == National
                || caller.province_contains(insured)
                || caller.province_contains(treatment)
        }
        Action::CheckEligibility { insured, treatment } => {
            matches!(caller, National | Service(_))
                || caller.province_contains(insured)
                || caller.province_contains(treatment)
        }
        Action::ReadReference => true,
        Action::WriteOwnAccount { province } => caller.province_contains(province),
        Action::ReadAccounts { province } => match (caller, province) {
            (National | Operator, _) => true,
            (Province(_), Some(p)) => caller.province_contains(p),
            _ => false,
        },
        Action::OperateClearing => *caller == National,
        Action::Supervise => matches!(caller, National | Operator),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: &str) -> Region {
        Region::parse(code).unwrap()
    }

    #[test]
    fn parses_identities() {
        assert_eq!(
            Caller::parse("province:370000"),
            Ok(Caller::Province(r("370000")))
        );
        assert_eq!(Caller::parse("national"), Ok(Caller::National));
        assert_eq!(Caller::parse("operator"), Ok(Caller::Operator));
        assert_eq!(
            Caller::parse("service:settlement"),
            Ok(Caller::Service("settlement".into()))
        );
        for bad in [
            "",
            "province:370100",
            "province:990000",
            "province:",
            "National",
            "service:",
            "service:Settle ment",
            "root",
        ] {
            assert!(Caller::parse(bad).is_err(), "{bad}");
        }
        for good in ["province:110000", "national", "operator", "service:filing"] {
            assert_eq!(Caller::parse(good).unwrap().to_string(), good);
        }
    }

    /// Every action against every kind of caller: the table of DESIGN.md section 7.
    #[test]
    fn the_rules_of_section_7() {
        let shandong = Caller::Province(r("370000"));
        let beijing = Caller::Province(r("110000"));
        let guangdong = Caller::Province(r("440000"));
        let national = Caller::National;
        let operator = Caller::Operator;
        let service = Caller::Service("settlement".into());
        let callers = [
            &shandong, &beijing, &guangdong, &national, &operator, &service,
        ];
        // Shandong's Jinan is the insured place, Beijing's Haidian the treatment place.
        let insured = r("370100");
        let treatment = r("110108");
        let table: [(Action, [bool; 6]); 13] = [
            (
                Action::WriteAsInsured { insured },
                [true, false, false, false, false, false],
            ),
            (
                Action::WriteAsTreatment { treatment },
                [false, true, false, false, false, false],
            ),
            (
                Action::ReadPerson { insured },
                [true, false, false, true, false, false],
            ),
            (
                Action::ReadCase { insured, treatment },
                [true, true, false, true, false, false],
            ),
            (
                Action::CheckEligibility { insured, treatment },
                [true, true, false, true, false, true],
            ),
            (Action::ReadReference, [true, true, true, true, true, true]),
            (
                Action::WriteOwnAccount {
                    province: r("370000"),
                },
                [true, false, false, false, false, false],
            ),
            (
                Action::WriteOwnAccount {
                    province: r("110000"),
                },
                [false, true, false, false, false, false],
            ),
            (
                Action::ReadAccounts {
                    province: Some(r("370000")),
                },
                [true, false, false, true, true, false],
            ),
            (
                Action::ReadAccounts {
                    province: Some(r("440000")),
                },
                [false, false, true, true, true, false],
            ),
            (
                Action::ReadAccounts { province: None },
                [false, false, false, true, true, false],
            ),
            (
                Action::OperateClearing,
                [false, false, false, true, false, false],
            ),
            (Action::Supervise, [false, false, false, true, true, false]),
        ];
        for (action, expected) in table {
            for (caller, want) in callers.iter().zip(expected) {
                assert_eq!(permits(caller, action), want, "{caller} {action:?}");
            }
        }
    }

    /// A province never reaches data that lies wholly outside it.
    #[test]
    fn provinces_stay_inside_themselves() {
        let regions: Vec<Region> = Region::all().step_by(97).collect();
        let provinces: Vec<Region> = Region::all().filter(|r| r.is_province()).collect();
        for p in &provinces {
            let caller = Caller::Province(*p);
            for a in &regions {
                for b in &regions {
                    let inside = p.contains(*a) || p.contains(*b);
                    let actions = [
                        Action::WriteAsInsured { insured: *a },
                        Action::WriteAsTreatment { treatment: *a },
                        Action::ReadPerson { insured: *a },
                        Action::ReadCase {
                            insured: *a,
                            treatment: *b,
                        },
                        Action::CheckEligibility {
                            insured: *a,
                            treatment: *b,
                        },
                        Action::WriteOwnAccount {
                            province: a.province(),
                        },
                        Action::ReadAccounts {
                            province: Some(a.province()),
                        },
                    ];
                    for action in actions {
                        if permits(&caller, action) {
                            assert!(inside, "{caller} {action:?}");
                        }
                    }
                }
            }
        }
    }
}
