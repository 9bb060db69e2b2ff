//! hello-http: the example fleet's `wasi:http` component. It greets with what the fleet repo
//! configured for this site (`GREETING`, `SITE`), so a commit to the repo shows up in its answer.

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
        let site = std::env::var("SITE").unwrap_or_else(|_| "an unnamed site".into());
        let (status, body) = match path.as_str() {
            "/" | "" => (200, format!("{greeting} from {site}!\n")),
            "/healthz" => (200, "ok\n".to_string()),
            _ => (404, format!("no route {path}\n")),
        };
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain; charset=utf-8".to_vec())])
            .unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(body_handle) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body_handle.write() {
            let _ = stream.blocking_write_and_flush(body.as_bytes());
            drop(stream);
        }
        let _ = OutgoingBody::finish(body_handle, None);
    }
}
