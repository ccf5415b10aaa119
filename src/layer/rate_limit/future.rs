define_answer_future!(
    "layer::rate_limit::ResponseFuture",
    "RateLimit",
    "When the caller's limit counts requests in flight, the request counts against it until \
     this future completes or is dropped."
);
