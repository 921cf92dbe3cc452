//! The answers to one request as they are decided, and the one path every refusal
//! takes: its ack (code, message, the device id and seq echoed) and its metric labels
//! (code, reason), so each check of [`crate::service`] only says *which* frames it
//! refuses and *why*.

use feeder_core::AckCode;
use feeder_proto::v1::{FrameAck, PushResponse, SignedFrame};

use crate::admission::{Candidate, Refusal, ack};

/// One slot per frame of the request, filled exactly once.
pub(crate) struct Answers {
    acks: Vec<Option<FrameAck>>,
    /// (code, reason) of every refused frame: the labels of
    /// `feeder_edge_frames_refused_total`.
    refusals: Vec<(AckCode, &'static str)>,
    accepted: u64,
}

impl Answers {
    pub(crate) fn new(frames: usize) -> Self {
        Self {
            acks: vec![None; frames],
            refusals: Vec::new(),
            accepted: 0,
        }
    }

    /// Frame `i` gets `ack`: refused by `refusal`, or accepted when there is none.
    pub(crate) fn answer(&mut self, i: usize, ack: FrameAck, refusal: Option<&Refusal>) {
        match refusal {
            Some(r) => self.refusals.push((r.code, r.reason)),
            None => self.accepted += 1,
        }
        self.acks[i] = Some(ack);
    }

    /// Frame `i` (decoded as `frame`) is refused by `r`.
    pub(crate) fn refuse(&mut self, i: usize, frame: &SignedFrame, r: &Refusal) {
        self.settle(i, frame, Some(r));
    }

    /// Frame `i` (decoded as `frame`) is accepted (`None`) or refused.
    pub(crate) fn settle(&mut self, i: usize, frame: &SignedFrame, refusal: Option<&Refusal>) {
        self.answer(i, ack(&frame.device_id, frame.seq, refusal), refusal);
    }

    /// Frames accepted, and (code, reason) per refused frame.
    pub(crate) fn counts(&self) -> (u64, &[(AckCode, &'static str)]) {
        (self.accepted, &self.refusals)
    }

    /// The response: every slot is filled by the checks; a missing one would be a bug,
    /// answered retryably.
    pub(crate) fn into_response(self) -> PushResponse {
        let acks = self
            .acks
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    let r = Refusal::new(AckCode::Unavailable, "internal", "retry");
                    ack("", 0, Some(&r))
                })
            })
            .collect();
        PushResponse { acks }
    }
}

/// Candidates still in the running, with their index in the request.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) cands: Vec<Candidate>,
    pub(crate) index: Vec<usize>,
}

impl Pending {
    pub(crate) fn push(&mut self, c: Candidate, i: usize) {
        self.cands.push(c);
        self.index.push(i);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cands.is_empty()
    }

    /// Keeps the candidates `refuse` has no refusal for; answers the others.
    pub(crate) fn sift(
        self,
        answers: &mut Answers,
        mut refuse: impl FnMut(&Candidate) -> Option<Refusal>,
    ) -> Self {
        let mut kept = Self {
            cands: Vec::with_capacity(self.cands.len()),
            index: Vec::with_capacity(self.cands.len()),
        };
        for (c, i) in self.cands.into_iter().zip(self.index) {
            match refuse(&c) {
                None => kept.push(c, i),
                Some(r) => answers.refuse(i, &c.frame, &r),
            }
        }
        kept
    }
}
