//! Requests handed from the SQLite writer straight to the delivery engine.
//!
//! A new event's requests are in memory when its transaction commits: the
//! fan-out has just written them, body and all. Reading them back with a
//! claim query after every commit was a fifth of the server's time under a
//! create load (each claim also re-reads pages, since a reader's cache is
//! dropped whenever the writer commits). So on SQLite, where one process
//! sends, the fan-out offers each request for a served webhook to the
//! writer connection's [`HandOff`]; the committer passes them on after the
//! commit, and drops what a rolled-back savepoint wrote. A request is only
//! ever handed over once it is durable, and it stays in the database like
//! any other: whatever the engine does not take, a claim finds.

use super::deliveries::Due;

/// What the jobs of one group transaction handed over, so far.
#[derive(Debug, Default)]
pub struct HandOff {
    fresh: Vec<Due>,
    /// Requests written for webhooks that are not served now (paused):
    /// they need no claim until the webhook changes.
    unserved: usize,
}

/// A point to undo to ([`HandOff::undo`]): where a savepoint began.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    fresh: usize,
    unserved: usize,
}

/// What a committed transaction hands on.
#[derive(Debug, Default)]
pub struct Committed {
    /// Due now, for webhooks served normally, in the order written.
    pub fresh: Vec<Due>,
    /// How many requests of the transaction need no claim: those handed
    /// over and those of webhooks not served now.
    pub accounted: usize,
}

impl HandOff {
    /// A request due now for a webhook that is served normally.
    pub fn offer(&mut self, due: Due) {
        self.fresh.push(due);
    }

    /// A request written for a webhook that is not served now.
    pub fn unserved(&mut self) {
        self.unserved += 1;
    }

    pub fn mark(&self) -> Mark {
        Mark { fresh: self.fresh.len(), unserved: self.unserved }
    }

    /// Forgets what was offered since `mark` (its savepoint was rolled back).
    pub fn undo(&mut self, mark: Mark) {
        self.fresh.truncate(mark.fresh);
        self.unserved = self.unserved.min(mark.unserved);
    }

    /// Empties it: what the transaction handed over.
    pub fn take(&mut self) -> Committed {
        let accounted = self.fresh.len() + self.unserved;
        self.unserved = 0;
        Committed { fresh: std::mem::take(&mut self.fresh), accounted }
    }
}
