//! The response scanner on real WPS 1.0.0 and 2.0 documents cut at every size: status
//! locations, job states, synchronous outputs, documents without a job, the scan limit.

use super::*;
use crate::policy::wps::testing::{id, A, B};

/// A WPS 1.0.0 document in the shape PyWPS writes: the accepted Execute response, and the
/// status document at `statusLocation` as the job goes on (`status` is the element inside
/// `<wps:Status>`).
fn execute_response(job: &str, status: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wps:ExecuteResponse xmlns:wps=\"http://www.opengis.net/wps/1.0.0\" \
         service=\"WPS\" version=\"1.0.0\" serviceInstance=\"http://127.0.0.1:8093/wps?request=GetCapabilities&amp;service=WPS\" \
         statusLocation=\"http://127.0.0.1:8093/outputs/{job}.xml\">\n  <wps:Process wps:processVersion=\"1.0\">\
         <ows:Identifier>subset</ows:Identifier><ows:Title>Subset</ows:Title></wps:Process>\n  \
         <wps:Status creationTime=\"2026-11-25T09:50:06Z\">\n    {status}\n  </wps:Status>\n</wps:ExecuteResponse>\n"
    )
}

fn async_response(job: &str) -> String {
    execute_response(
        job,
        "<wps:ProcessAccepted percentCompleted=\"0\">accepted</wps:ProcessAccepted>",
    )
}

/// A synchronous response: empty statusLocation, an input reference to another job (with
/// lineage), the status, then the outputs by reference.
fn sync_response(job: &str, other: &str) -> String {
    format!(
        "<wps:ExecuteResponse statusLocation=\"\">\n<wps:Process><ows:Identifier>subset</ows:Identifier></wps:Process>\n\
         <wps:Status creationTime=\"2026-11-25T09:50:06Z\"><wps:ProcessSucceeded>done</wps:ProcessSucceeded></wps:Status>\n\
         <wps:DataInputs><wps:Input><wps:Reference xlink:href=\"http://h/outputs/{other}/in.nc\"/></wps:Input></wps:DataInputs>\n\
         <wps:ProcessOutputs>\n<wps:Output><ows:Identifier>server</ows:Identifier><wps:Data><wps:LiteralData>fp-1</wps:LiteralData></wps:Data></wps:Output>\n\
         <wps:Output><ows:Identifier>output</ows:Identifier><wps:Reference href=\"http://h/outputs/{job}/subset.txt\" mimeType=\"text/plain\"/></wps:Output>\n\
         </wps:ProcessOutputs></wps:ExecuteResponse>"
    )
}

/// A WPS 2.0 `StatusInfo` (the answer to an asynchronous Execute and to GetStatus).
fn status_info(job: &str, status: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wps:StatusInfo xmlns:wps=\"http://www.opengis.net/wps/2.0\">\n  \
         <wps:JobID>{job}</wps:JobID>\n  <wps:Status>{status}</wps:Status>\n  \
         <wps:NextPoll>2026-11-25T09:51:06Z</wps:NextPoll>\n</wps:StatusInfo>\n"
    )
}

/// Every sighting of `doc` fed in chunks of `size`, the end of the body included.
fn scan_in_chunks(doc: &str, size: usize) -> Vec<Sighting> {
    let mut scanner = JobScanner::default();
    let mut found: Vec<Sighting> = doc
        .as_bytes()
        .chunks(size)
        .filter_map(|c| scanner.feed(c))
        .collect();
    found.extend(scanner.finish());
    assert!(scanner.is_done());
    found
}

fn seen(job: &str, state: Option<JobState>) -> Vec<Sighting> {
    vec![Sighting { id: id(job), state }]
}

const RUNNING: Option<JobState> = Some(JobState::Running);
const ENDED: Option<JobState> = Some(JobState::Ended);

#[test]
fn finds_the_status_location_however_the_body_is_cut() {
    let doc = async_response(A);
    for size in [1, 2, 3, 7, 15, 16, 17, 64, 100, doc.len()] {
        assert_eq!(
            scan_in_chunks(&doc, size),
            seen(A, RUNNING),
            "chunks of {size}"
        );
    }
    // Single quotes and blanks after `=` are XML too.
    let doc = format!("<r statusLocation= '/outputs/{A}.xml'/>");
    assert_eq!(scan_in_chunks(&doc, 5), seen(A, None));
}

#[test]
fn wps_1_status_documents_say_whether_the_job_runs() {
    let failed = "<wps:ProcessFailed><wps:ExceptionReport><ows:Exception exceptionCode=\"NoApplicableCode\">\
                  <ows:ExceptionText>Process error: out of memory</ows:ExceptionText></ows:Exception>\
                  </wps:ExceptionReport></wps:ProcessFailed>";
    for (status, state) in [
        (
            "<wps:ProcessStarted percentCompleted=\"40\">PyWPS Process started</wps:ProcessStarted>",
            JobState::Running,
        ),
        ("<wps:ProcessPaused percentCompleted=\"40\"/>", JobState::Running),
        (
            "<wps:ProcessSucceeded>PyWPS Process subset finished</wps:ProcessSucceeded>",
            JobState::Ended,
        ),
        (failed, JobState::Ended),
    ] {
        let doc = execute_response(A, status);
        for size in [1, 3, 8, 31, doc.len()] {
            assert_eq!(
                scan_in_chunks(&doc, size),
                seen(A, Some(state)),
                "{status} in chunks of {size}"
            );
        }
    }
    // Another prefix, or none.
    let doc = format!(
        "<ExecuteResponse statusLocation=\"/o/{A}.xml\"><Status creationTime=\"t\">\
         <ProcessStarted/></Status></ExecuteResponse>"
    );
    assert_eq!(scan_in_chunks(&doc, 4), seen(A, RUNNING));
    let doc = format!(
        "<ns0:ExecuteResponse statusLocation=\"/o/{A}.xml\"><ns0:Status>\n<ns0:ProcessSucceeded>ok</ns0:ProcessSucceeded></ns0:Status></ns0:ExecuteResponse>"
    );
    assert_eq!(scan_in_chunks(&doc, 4), seen(A, ENDED));
}

#[test]
fn wps_2_status_info_names_the_job_and_its_state() {
    for (word, state) in [
        ("Accepted", JobState::Running),
        ("Running", JobState::Running),
        ("Succeeded", JobState::Ended),
        ("Failed", JobState::Ended),
        ("Dismissed", JobState::Ended),
    ] {
        let doc = status_info(B, word);
        for size in [1, 2, 5, 13, doc.len()] {
            assert_eq!(
                scan_in_chunks(&doc, size),
                seen(B, Some(state)),
                "{word} in chunks of {size}"
            );
        }
    }
    // A Result document names the job but no state; blanks around the id are allowed.
    let result =
        format!("<wps:Result><wps:JobID>\n  {A}\n</wps:JobID><wps:Output id=\"o\"/></wps:Result>");
    assert_eq!(scan_in_chunks(&result, 3), seen(A, None));
    // A word that is no state says nothing.
    assert_eq!(
        scan_in_chunks(&status_info(A, "Sleeping"), 7),
        seen(A, None)
    );
}

#[test]
fn a_synchronous_response_is_known_by_its_output_reference() {
    let doc = sync_response(A, B);
    for size in [1, 5, 13, 64, doc.len()] {
        assert_eq!(
            scan_in_chunks(&doc, size),
            seen(A, ENDED),
            "chunks of {size}"
        );
    }
}

#[test]
fn documents_without_a_job_yield_nothing() {
    let caps = "<wps:Capabilities><ows:Operation name=\"Execute\"><ows:Get xlink:href=\"http://h/wps?\"/></ows:Operation></wps:Capabilities>";
    assert_eq!(scan_in_chunks(caps, 7), []);
    // The output reference has no UUID.
    let doc = "<r statusLocation=\"\"><wps:Status><wps:ProcessSucceeded/></wps:Status><wps:ProcessOutputs><wps:Reference href=\"http://h/x.nc\"/></wps:ProcessOutputs></r>";
    assert_eq!(scan_in_chunks(doc, 3), []);
    // Not quoted, or an unterminated value longer than MAX_URL: skipped, memory bounded.
    let mut scanner = JobScanner::default();
    assert_eq!(scanner.feed(b"<r statusLocation=bare "), None);
    assert_eq!(scanner.feed(b"statusLocation=\""), None);
    for _ in 0..100 {
        assert_eq!(scanner.feed(&[b'a'; 100]), None);
        assert!(
            scanner.id.carry.len() <= MAX_URL + 32,
            "{}",
            scanner.id.carry.len()
        );
    }
    // An endless status tag: the state finder's carry stays small too.
    let mut scanner = JobScanner::default();
    assert_eq!(scanner.feed(b"<wps:Status creationTime=\""), None);
    for _ in 0..100 {
        assert_eq!(scanner.feed(&[b'a'; 100]), None);
        assert!(
            scanner.state.carry.len() <= 1024,
            "{}",
            scanner.state.carry.len()
        );
    }
    assert_eq!(scanner.finish(), None);
}

#[test]
fn scanning_stops_after_the_limit() {
    let mut scanner = JobScanner::default();
    let filler = vec![b' '; 64 * 1024];
    for _ in 0..SCAN_LIMIT / filler.len() {
        assert_eq!(scanner.feed(&filler), None);
    }
    assert!(scanner.is_done());
    assert_eq!(scanner.feed(async_response(A).as_bytes()), None);
    // A job found but no state before the limit: reported without one.
    let mut scanner = JobScanner::default();
    let head = format!("<r statusLocation=\"/o/{A}.xml\">");
    assert_eq!(scanner.feed(head.as_bytes()), None);
    let mut last = None;
    while !scanner.is_done() {
        last = scanner.feed(&filler);
    }
    assert_eq!(
        last,
        Some(Sighting {
            id: id(A),
            state: None
        })
    );
}
