//! Ledger postings of DESIGN.md section 6: every entry is balanced (its legs sum to zero).

use rust_decimal::Decimal;

use crate::region::Region;

/// The insured-place parts of a settled claim, as the ledger posts them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsuredShare {
    pub fund: Decimal,
    pub serious_illness: Decimal,
    pub assistance: Decimal,
    pub personal_account: Decimal,
}

impl InsuredShare {
    pub fn total(&self) -> Decimal {
        self.fund + self.serious_illness + self.assistance + self.personal_account
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub account: String,
    pub amount: Decimal,
}

/// Account names, one place for their spelling.
pub mod account {
    use crate::region::Region;

    /// What the treatment province is owed by the insured province (debit balance).
    pub fn receivable(treatment: Region, insured: Region) -> String {
        format!("receivable:{treatment}:{insured}")
    }
    /// What the insured province owes the treatment province, per fund (credit balance).
    pub fn payable(insured: Region, treatment: Region, fund: &str) -> String {
        format!("payable:{insured}:{treatment}:{fund}")
    }
    /// The insured province's prepaid reserve at the treatment province.
    pub fn reserve(insured: Region, treatment: Region) -> String {
        format!("reserve:{insured}:{treatment}")
    }
    /// The insured province's own money, that tops reserves up.
    pub fn treasury(insured: Region) -> String {
        format!("treasury:{insured}")
    }
}

/// The balanced entry of a settled claim, or of its reversal (every sign flipped).
/// Cash never enters clearing, and legs of zero are left out.
pub fn claim_entry(
    insured: Region,
    treatment: Region,
    share: &InsuredShare,
    reversal: bool,
) -> Vec<Leg> {
    let sign = if reversal {
        Decimal::NEGATIVE_ONE
    } else {
        Decimal::ONE
    };
    let insured = insured.province();
    let treatment = treatment.province();
    let mut legs = vec![Leg {
        account: account::receivable(treatment, insured),
        amount: sign * share.total(),
    }];
    for (fund, amount) in [
        ("fund", share.fund),
        ("serious_illness", share.serious_illness),
        ("assistance", share.assistance),
        ("personal_account", share.personal_account),
    ] {
        if !amount.is_zero() {
            legs.push(Leg {
                account: account::payable(insured, treatment, fund),
                amount: -sign * amount,
            });
        }
    }
    legs.retain(|leg| !leg.amount.is_zero());
    legs
}

/// The balanced entry of a reserve top-up: the insured province's treasury pays `amount`
/// into its reserve at the treatment province.
pub fn top_up_entry(insured: Region, treatment: Region, amount: Decimal) -> Vec<Leg> {
    vec![
        Leg {
            account: account::reserve(insured.province(), treatment.province()),
            amount,
        },
        Leg {
            account: account::treasury(insured.province()),
            amount: -amount,
        },
    ]
}

/// Whether the legs of an entry sum to zero.
pub fn is_balanced(legs: &[Leg]) -> bool {
    legs.iter().map(|l| l.amount).sum::<Decimal>().is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn regions() -> (Region, Region) {
        (
            Region::parse("370100").unwrap(),
            Region::parse("110000").unwrap(),
        )
    }

    #[test]
    fn claim_entry_posts_by_province_and_fund() {
        let (insured, treatment) = regions();
        let share = InsuredShare {
            fund: dec!(25728.75),
            serious_illness: dec!(0),
            assistance: dec!(10.00),
            personal_account: dec!(0),
        };
        let legs = claim_entry(insured, treatment, &share, false);
        assert_eq!(
            legs,
            vec![
                Leg {
                    account: "receivable:110000:370000".into(),
                    amount: dec!(25738.75)
                },
                Leg {
                    account: "payable:370000:110000:fund".into(),
                    amount: dec!(-25728.75)
                },
                Leg {
                    account: "payable:370000:110000:assistance".into(),
                    amount: dec!(-10.00)
                },
            ]
        );
        let reversed = claim_entry(insured, treatment, &share, true);
        assert!(
            legs.iter()
                .zip(&reversed)
                .all(|(a, b)| a.amount == -b.amount)
        );
    }

    #[test]
    fn a_claim_with_no_insured_share_posts_nothing() {
        let (insured, treatment) = regions();
        assert!(claim_entry(insured, treatment, &InsuredShare::default(), false).is_empty());
    }

    proptest! {
        #[test]
        fn every_entry_is_balanced(
            f in 0i64..1_000_000_000, s in 0i64..100_000_000, a in 0i64..100_000_000,
            p in 0i64..100_000_000, reversal: bool,
        ) {
            let (insured, treatment) = regions();
            let share = InsuredShare {
                fund: Decimal::new(f, 2),
                serious_illness: Decimal::new(s, 2),
                assistance: Decimal::new(a, 2),
                personal_account: Decimal::new(p, 2),
            };
            prop_assert!(is_balanced(&claim_entry(insured, treatment, &share, reversal)));
        }
    }
}

/// How far a prepaid reserve is used: `NONE` below the yellow threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReserveLevel {
    None,
    Yellow,
    Red,
}

/// Warning thresholds as fractions of the sized amount (70 % and 90 % by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub yellow: Decimal,
    pub red: Decimal,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            yellow: Decimal::new(70, 2),
            red: Decimal::new(90, 2),
        }
    }
}

/// The share of the sized reserve drawn (0 when nothing is sized).
pub fn usage(sized: Decimal, drawn: Decimal) -> Decimal {
    if sized <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    (drawn / sized).max(Decimal::ZERO)
}

pub fn level(sized: Decimal, drawn: Decimal, t: Thresholds) -> ReserveLevel {
    let u = usage(sized, drawn);
    if sized <= Decimal::ZERO {
        ReserveLevel::None
    } else if u >= t.red {
        ReserveLevel::Red
    } else if u >= t.yellow {
        ReserveLevel::Yellow
    } else {
        ReserveLevel::None
    }
}

/// What a change of usage does to the warning state: the level to record and whether a
/// `ReserveLow` event is due. Warnings go out once per crossing upwards; only a top-up
/// re-arms them (brings the recorded level down).
pub fn warning(recorded: ReserveLevel, now: ReserveLevel, top_up: bool) -> (ReserveLevel, bool) {
    if now > recorded {
        (now, true)
    } else if top_up && now < recorded {
        (now, false)
    } else {
        (recorded, false)
    }
}

/// One pair's side of a period: what the insured province owes the treatment province.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairTotals {
    pub settled: i64,
    pub reversed: i64,
    pub share: InsuredShare,
}

/// A posted claim or reversal, as statements and reconciliation see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    pub insured: Region,
    pub treatment: Region,
    pub reversal: bool,
    /// Unsigned parts of the claim.
    pub share: InsuredShare,
}

impl Posting {
    /// The parts as they count towards the pair: a reversal's are negative.
    pub fn signed_share(&self) -> InsuredShare {
        let sign = if self.reversal {
            Decimal::NEGATIVE_ONE
        } else {
            Decimal::ONE
        };
        InsuredShare {
            fund: sign * self.share.fund,
            serious_illness: sign * self.share.serious_illness,
            assistance: sign * self.share.assistance,
            personal_account: sign * self.share.personal_account,
        }
    }
}

/// Totals per (insured, treatment) province pair; a reversal subtracts its claim.
pub fn statement(postings: &[Posting]) -> std::collections::BTreeMap<(Region, Region), PairTotals> {
    let mut pairs: std::collections::BTreeMap<(Region, Region), PairTotals> = Default::default();
    for p in postings {
        let t = pairs
            .entry((p.insured.province(), p.treatment.province()))
            .or_default();
        if p.reversal {
            t.reversed += 1;
        } else {
            t.settled += 1;
        }
        let share = p.signed_share();
        t.share.fund += share.fund;
        t.share.serious_illness += share.serious_illness;
        t.share.assistance += share.assistance;
        t.share.personal_account += share.personal_account;
    }
    pairs
}

/// Each province's multilateral net: what it receives as treatment place minus what it owes
/// as insured place. The nets of a period sum to zero.
pub fn nets(
    pairs: &std::collections::BTreeMap<(Region, Region), PairTotals>,
) -> std::collections::BTreeMap<Region, Decimal> {
    let mut nets: std::collections::BTreeMap<Region, Decimal> = Default::default();
    for ((insured, treatment), totals) in pairs {
        let amount = totals.share.total();
        *nets.entry(*treatment).or_default() += amount;
        *nets.entry(*insured).or_default() -= amount;
    }
    nets
}

/// Settlement instructions from nets: debtors pay creditors, largest first, until every
/// net is covered. The instructions' amounts sum to the creditors' total.
pub fn instructions(
    nets: &std::collections::BTreeMap<Region, Decimal>,
) -> Vec<(Region, Region, Decimal)> {
    let mut debtors: Vec<(Region, Decimal)> = nets
        .iter()
        .filter(|(_, n)| n.is_sign_negative() && !n.is_zero())
        .map(|(r, n)| (*r, -*n))
        .collect();
    let mut creditors: Vec<(Region, Decimal)> = nets
        .iter()
        .filter(|(_, n)| n.is_sign_positive() && !n.is_zero())
        .map(|(r, n)| (*r, *n))
        .collect();
    debtors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    creditors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    let (mut d, mut c) = (0, 0);
    while d < debtors.len() && c < creditors.len() {
        let amount = debtors[d].1.min(creditors[c].1);
        out.push((debtors[d].0, creditors[c].0, amount));
        debtors[d].1 -= amount;
        creditors[c].1 -= amount;
        if debtors[d].1.is_zero() {
            d += 1;
        }
        if creditors[c].1.is_zero() {
            c += 1;
        }
    }
    out
}

#[cfg(test)]
mod clearing_tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    const PROVINCES: [&str; 5] = ["110000", "310000", "370000", "440000", "510000"];

    fn arb_posting() -> impl Strategy<Value = Posting> {
        (
            0usize..5,
            0usize..5,
            any::<bool>(),
            0i64..10_000_000,
            0i64..1_000_000,
            0i64..1_000_000,
            0i64..100_000,
        )
            .prop_filter("two provinces", |(i, t, ..)| i != t)
            .prop_map(|(i, t, reversal, f, s, a, p)| Posting {
                insured: Region::parse(PROVINCES[i]).unwrap(),
                treatment: Region::parse(PROVINCES[t]).unwrap(),
                reversal,
                share: InsuredShare {
                    fund: Decimal::new(f, 2),
                    serious_illness: Decimal::new(s, 2),
                    assistance: Decimal::new(a, 2),
                    personal_account: Decimal::new(p, 2),
                },
            })
    }

    proptest! {
        /// Whatever the postings, every entry balances, the accounts sum to zero, the nets
        /// sum to zero, and the instructions move exactly the nets.
        #[test]
        fn clearing_is_closed(postings in prop::collection::vec(arb_posting(), 0..60)) {
            let mut accounts: std::collections::BTreeMap<String, Decimal> = Default::default();
            for p in &postings {
                let legs = claim_entry(p.insured, p.treatment, &p.share, p.reversal);
                prop_assert!(is_balanced(&legs));
                for leg in legs {
                    *accounts.entry(leg.account).or_default() += leg.amount;
                }
            }
            prop_assert_eq!(accounts.values().copied().sum::<Decimal>(), Decimal::ZERO);
            let pairs = statement(&postings);
            let nets = nets(&pairs);
            prop_assert_eq!(nets.values().copied().sum::<Decimal>(), Decimal::ZERO);
            // The receivable accounts equal the pairs' totals.
            for ((insured, treatment), totals) in &pairs {
                let receivable = accounts.get(&account::receivable(*treatment, *insured)).copied().unwrap_or_default();
                prop_assert_eq!(receivable, totals.share.total());
            }
            let paid: std::collections::BTreeMap<Region, Decimal> = instructions(&nets).into_iter().fold(Default::default(), |mut m, (from, to, amount)| {
                *m.entry(from).or_default() -= amount;
                *m.entry(to).or_default() += amount;
                m
            });
            for (region, net) in &nets {
                prop_assert_eq!(paid.get(region).copied().unwrap_or_default(), *net);
            }
        }
    }

    #[test]
    fn warnings_fire_once_per_crossing_and_rearm_on_top_up() {
        let t = Thresholds::default();
        assert_eq!(level(dec!(1000), dec!(699.99), t), ReserveLevel::None);
        assert_eq!(level(dec!(1000), dec!(700), t), ReserveLevel::Yellow);
        assert_eq!(level(dec!(1000), dec!(900), t), ReserveLevel::Red);
        assert_eq!(level(dec!(0), dec!(900), t), ReserveLevel::None);
        use ReserveLevel::*;
        assert_eq!(warning(None, Yellow, false), (Yellow, true));
        assert_eq!(warning(Yellow, Yellow, false), (Yellow, false));
        assert_eq!(warning(Yellow, Red, false), (Red, true));
        assert_eq!(
            warning(Red, Yellow, false),
            (Red, false),
            "a reversal does not re-arm"
        );
        assert_eq!(warning(Red, None, true), (None, false), "a top-up re-arms");
        assert_eq!(warning(None, Red, false), (Red, true));
    }
}
