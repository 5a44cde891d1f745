//! Lease hold limits in virtual time: a lease held past its limit is taken back and its
//! page serves the next caller; one given back in time leaves no deadline behind.

use super::*;

#[test]
fn a_lease_held_past_its_limit_is_taken_back_and_its_page_serves_the_next_caller() {
    let mut h = Harness::new(config(1));
    let s = Duration::from_secs(1);
    let holder = h.acquire(Job::new().max_hold(2 * s));
    h.open_all();
    assert_eq!(h.served(), [holder]);
    let Some((_, _, Holder::Lease(grant))) = h.out.first() else {
        panic!("the holder has a lease")
    };
    let lease = grant.lease;
    let next = h.acquire(Job::new());
    assert_eq!(
        h.plan.next_deadline(),
        Some(h.now + 2 * s),
        "the hold's deadline"
    );
    h.advance(s);
    assert!(
        h.served().is_empty(),
        "within its limit the lease keeps its page"
    );
    assert!(h.plan.lease_page(lease).is_some());
    h.advance(s);
    assert_eq!(
        h.served(),
        [next],
        "taken back, the page went to the next caller"
    );
    assert!(h.plan.lease_page(lease).is_none());
    let err = h.plan.lease_refusal(lease);
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Job));
    assert_eq!(h.plan.metrics.borrow().counters.timeouts_job, 1);
    // The first holder lets go late: nothing changes for the page's new holder.
    h.give_back(Return::Clean);
    assert_eq!(h.plan.busy(), 1, "the second lease still holds the page");
    assert_eq!(
        h.plan.next_deadline(),
        None,
        "the second lease has no limit"
    );
    h.check();
}

#[test]
fn a_lease_given_back_in_time_leaves_no_deadline_behind() {
    let mut h = Harness::new(config(1));
    let s = Duration::from_secs(1);
    h.acquire(Job::new().timeout(5 * s));
    h.open_all();
    assert_eq!(h.plan.next_deadline(), Some(h.now + 5 * s));
    h.give_back(Return::Clean);
    assert_eq!(h.plan.next_deadline(), None);
    h.advance(10 * s);
    assert_eq!(h.plan.busy(), 0);
    h.check();
}
