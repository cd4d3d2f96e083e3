//! Where a device's bytes went: by country and by autonomous system, for one device and
//! direction.
//!
//! Each poll's newly exported bytes of an address are added to the country and the AS the
//! databases give that address at that poll (see `enrich`), so, like labels, every series only
//! grows and a database replaced later never moves bytes already exported. The sums are exact:
//! the countries (with `unknown`), and the ASes (with `unknown` and `other`), each add up to
//! what the destinations hold; the bytes the kernel lost before they were read (no address)
//! are added to `unknown` when rendered, so each family sums to the device total.
//!
//! Countries are bounded by their codes (two letters). AS series are bounded per device and
//! direction (`enrich.max_as_per_device`): past it, the AS with the fewest bytes folds into
//! `other` (possibly the new one itself), so what stays named is about the top by bytes, and a
//! scan across the internet costs at most that many series.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    enrich::{Asn, Country, Enrichment},
    types::Count,
};

/// One named AS of a device: its bytes and the organisation the database gave it first.
#[derive(Debug, Clone)]
pub struct AsCount {
    pub org: Option<Arc<str>>,
    pub count: Count,
}

/// The countries and ASes of one device and direction.
#[derive(Debug, Default, Clone)]
pub struct Places {
    /// `None`: addresses no database places.
    countries: BTreeMap<Option<Country>, Count>,
    /// `None`: addresses no database gives an AS.
    ases: BTreeMap<Option<Asn>, AsCount>,
    /// ASes folded away by the bound.
    other_as: Count,
}

impl Places {
    /// Adds `step`, exported for an address the databases describe as `enrichment`.
    pub fn add(&mut self, enrichment: &Enrichment, step: Count, max_ases: usize) {
        let country = self.countries.entry(enrichment.country).or_default();
        *country = country.saturating_add(step);
        let key = enrichment.asn;
        if let Some(entry) = self.ases.get_mut(&key) {
            entry.count = entry.count.saturating_add(step);
            return;
        }
        self.ases.insert(
            key,
            AsCount {
                org: enrichment.org.clone(),
                count: step,
            },
        );
        let named = self.ases.keys().filter(|k| k.is_some()).count();
        if named > max_ases {
            // The fewest bytes fold into `other`; ties go to the highest number, so the
            // outcome does not depend on the order of arrival within a poll.
            let smallest = self
                .ases
                .iter()
                .filter(|(k, _)| k.is_some())
                .min_by_key(|(k, a)| (a.count.bytes, a.count.packets, std::cmp::Reverse(**k)))
                .map(|(k, _)| *k);
            if let Some(folded) = smallest.and_then(|k| self.ases.remove(&k)) {
                self.other_as = self.other_as.saturating_add(folded.count);
            }
        }
    }

    /// Bytes by country; `None` is `unknown`.
    pub fn countries(&self) -> impl Iterator<Item = (Option<Country>, Count)> + '_ {
        self.countries.iter().map(|(c, n)| (*c, *n))
    }

    /// Bytes by AS; `None` is `unknown`.
    pub fn ases(&self) -> impl Iterator<Item = (Option<Asn>, &AsCount)> + '_ {
        self.ases.iter().map(|(a, n)| (*a, n))
    }

    /// What the bound folded away.
    pub fn other_as(&self) -> Count {
        self.other_as
    }

    pub fn is_empty(&self) -> bool {
        self.countries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(country: &str, asn: u32) -> Enrichment {
        Enrichment {
            country: Country::parse(country),
            asn: (asn > 0).then_some(Asn(asn)),
            org: Some(Arc::from(format!("org {asn}").as_str())),
        }
    }

    fn sum(counts: impl Iterator<Item = Count>) -> Count {
        counts.fold(Count::default(), Count::saturating_add)
    }

    #[test]
    fn countries_and_ases_each_add_up_to_what_was_added() {
        let mut places = Places::default();
        places.add(&place("DE", 64500), Count::new(100, 1), 8);
        places.add(&place("CN", 4134), Count::new(300, 3), 8);
        places.add(&place("DE", 64501), Count::new(50, 1), 8);
        places.add(&Enrichment::default(), Count::new(7, 1), 8);
        let all = Count::new(457, 6);
        assert_eq!(sum(places.countries().map(|(_, n)| n)), all);
        assert_eq!(
            sum(places.ases().map(|(_, a)| a.count)).saturating_add(places.other_as()),
            all
        );
        let de = places
            .countries()
            .find(|(c, _)| c.map(|c| c.to_string()).as_deref() == Some("DE"));
        assert_eq!(de.map(|(_, n)| n), Some(Count::new(150, 2)));
        assert_eq!(
            places.countries().find(|(c, _)| c.is_none()).map(|x| x.1),
            Some(Count::new(7, 1))
        );
    }

    #[test]
    fn past_the_bound_the_smallest_as_folds_into_other_and_the_sum_stays_exact() {
        let mut places = Places::default();
        let mut all = Count::default();
        for asn in 1..=50u32 {
            let step = Count::new(u64::from(asn) * 10, 1);
            all = all.saturating_add(step);
            places.add(&place("US", asn), step, 4);
            let named = places.ases().filter(|(a, _)| a.is_some()).count();
            assert!(named <= 4, "{named} named ASes after AS{asn}");
            assert_eq!(
                sum(places.ases().map(|(_, a)| a.count)).saturating_add(places.other_as()),
                all
            );
        }
        // The four largest stay named.
        let named: Vec<u32> = places.ases().filter_map(|(a, _)| a.map(|a| a.0)).collect();
        assert_eq!(named, vec![47, 48, 49, 50]);
        // Unknown is never folded and does not count against the bound.
        places.add(&Enrichment::default(), Count::new(1, 1), 4);
        assert!(places.ases().any(|(a, _)| a.is_none()));
        assert_eq!(places.ases().filter(|(a, _)| a.is_some()).count(), 4);
    }

    #[test]
    fn a_named_as_keeps_its_first_organisation() {
        let mut places = Places::default();
        places.add(&place("DE", 64500), Count::new(1, 1), 8);
        let mut renamed = place("DE", 64500);
        renamed.org = Some(Arc::from("Another Name"));
        places.add(&renamed, Count::new(1, 1), 8);
        let (_, entry) = places.ases().next().unwrap();
        assert_eq!(entry.org.as_deref(), Some("org 64500"));
        assert_eq!(entry.count, Count::new(2, 2));
    }
}
