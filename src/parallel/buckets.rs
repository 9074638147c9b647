//! Gradient buckets: which parts of the flat gradient buffer are reduced
//! together, and when, so that the reduction of the last layers overlaps the
//! backward pass of the first ones.
//!
//! A bucket is a run of consecutive gradient stages
//! ([`Layout::grad_stages`]: head, blocks from the last, embeddings) holding
//! at least the bucket size (a stage larger than that is a bucket alone). It
//! is launched as soon as its last stage is final. Buckets are launched in
//! plan order on every rank, also by a rank that computed no micro-batch and
//! launches them all at the end, because NCCL needs every rank to issue the
//! same collectives in the same order.
//!
//! [`Layout::grad_stages`]: crate::model::Layout::grad_stages

use crate::backend::Span;
use std::ops::Range;

/// PyTorch DDP's default bucket size.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// One bucket: the stages it closes with and the element ranges of the flat
/// buffer it covers (sorted, adjacent spans merged so that each range is one
/// collective).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub stages: Range<usize>,
    pub ranges: Vec<Range<usize>>,
}

impl Bucket {
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The buckets of a model, the same on every rank.
#[derive(Debug, Clone)]
pub struct BucketPlan {
    buckets: Vec<Bucket>,
}

impl BucketPlan {
    /// Groups `stages` (in backward order) into buckets of at least
    /// `bucket_elems` elements; the last bucket takes what is left.
    pub fn new(stages: &[Vec<Span>], bucket_elems: usize) -> BucketPlan {
        let mut buckets = Vec::new();
        let mut first = 0;
        let mut spans: Vec<Span> = Vec::new();
        for (i, stage) in stages.iter().enumerate() {
            spans.extend(stage.iter().copied());
            let elems: usize = spans.iter().map(|s| s.len).sum();
            if elems >= bucket_elems.max(1) || i + 1 == stages.len() {
                buckets.push(Bucket {
                    stages: first..i + 1,
                    ranges: merged_ranges(std::mem::take(&mut spans)),
                });
                first = i + 1;
            }
        }
        BucketPlan { buckets }
    }

    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }
}

/// The spans' element ranges, sorted, with touching ranges joined.
fn merged_ranges(mut spans: Vec<Span>) -> Vec<Range<usize>> {
    spans.sort_by_key(|s| s.offset);
    let mut out: Vec<Range<usize>> = Vec::new();
    for s in spans.into_iter().filter(|s| s.len > 0) {
        match out.last_mut() {
            Some(last) if last.end == s.offset => last.end = s.offset + s.len,
            _ => out.push(s.range()),
        }
    }
    out
}

/// Which buckets a step launches when: driven by the stages the backward
/// reports, always in plan order.
#[derive(Debug, Clone)]
pub struct BucketSchedule {
    plan: BucketPlan,
    launched: usize,
}

impl BucketSchedule {
    pub fn new(plan: BucketPlan) -> Self {
        BucketSchedule { plan, launched: 0 }
    }

    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    /// A new step: no bucket launched yet.
    pub fn start_step(&mut self) {
        self.launched = 0;
    }

    /// Stage `stage` is final: the buckets (indices) to launch now, those
    /// whose stages all precede or equal it and that were not launched yet.
    pub fn stage_done(&mut self, stage: usize) -> Range<usize> {
        let ready = self
            .plan
            .buckets
            .iter()
            .take_while(|b| b.stages.end <= stage + 1)
            .count();
        let from = self.launched;
        self.launched = self.launched.max(ready);
        from..self.launched
    }

    /// The buckets not launched during the backward (all of them on a rank
    /// that ran no backward in this step), to launch before the optimizer.
    pub fn rest(&mut self) -> Range<usize> {
        let from = self.launched;
        self.launched = self.plan.buckets.len();
        from..self.launched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Model;

    fn span(offset: usize, len: usize) -> Span {
        Span { offset, len }
    }

    #[test]
    fn stages_are_grouped_until_the_bucket_is_full() {
        let stages = vec![
            vec![span(90, 10)],
            vec![span(60, 20), span(85, 5)],
            vec![span(40, 20), span(80, 5)],
            vec![span(0, 40)],
        ];
        let plan = BucketPlan::new(&stages, 25);
        let b = plan.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].stages, 0..2);
        assert_eq!(b[0].ranges, vec![60..80, 85..100]);
        assert_eq!(b[1].stages, 2..3);
        assert_eq!(b[1].ranges, vec![40..60, 80..85]);
        assert_eq!(b[2].ranges, vec![0..40]);
    }

    #[test]
    fn buckets_launch_in_order_as_stages_finish() {
        let stages: Vec<Vec<Span>> = (0..5).map(|i| vec![span(40 - 10 * i, 10)]).collect();
        let mut s = BucketSchedule::new(BucketPlan::new(&stages, 20));
        assert_eq!(s.plan().buckets().len(), 3);
        s.start_step();
        assert_eq!(s.stage_done(0), 0..0);
        assert_eq!(s.stage_done(1), 0..1);
        assert_eq!(s.stage_done(2), 1..1);
        assert_eq!(s.stage_done(3), 1..2);
        assert_eq!(s.rest(), 2..3);
        s.start_step();
        assert_eq!(
            s.rest(),
            0..3,
            "a rank without backward launches every bucket"
        );
    }

    #[test]
    fn every_element_of_a_model_is_in_one_bucket() {
        let cfg = Config::resolve("crammed-bert", &[]).unwrap();
        let layout = Model::new(&cfg.model).layout;
        let plan = BucketPlan::new(&layout.grad_stages(), DEFAULT_BUCKET_BYTES / 4);
        let mut ranges: Vec<Range<usize>> = plan
            .buckets()
            .iter()
            .flat_map(|b| b.ranges.iter().cloned())
            .collect();
        ranges.sort_by_key(|r| r.start);
        let mut next = 0;
        for r in ranges {
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, layout.len);
        assert!(
            plan.buckets().len() > 4,
            "crammed-bert's 120 M parameters make several 25 MB buckets"
        );
    }
}
