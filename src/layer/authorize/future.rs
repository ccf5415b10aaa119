define_answer_future!(
    "layer::authorize::ResponseFuture",
    "Authorize",
    "When the rule that admitted the request limits requests in flight, the request counts \
     against that limit until this future completes or is dropped."
);
