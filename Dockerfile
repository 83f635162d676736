# One image with the three binaries: kra-operator (the entrypoint), kra-collector and
# kra-evaluator (run by the worker Jobs, found on PATH). Multi-stage; the runtime stage is
# distroless (glibc, CA certificates, no shell) and runs as the non-root UID 65532, the UID the
# operator gives worker pods.
#
#   docker build --build-arg KRA_COMMIT_SHA=$(git rev-parse HEAD) -t kra-operator:dev .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is not in the build context: the commit the evaluator records comes in as an argument.
ARG KRA_COMMIT_SHA=unknown
ENV KRA_COMMIT_SHA=${KRA_COMMIT_SHA}
RUN cargo build --release --locked --bin kra-operator --bin kra-collector --bin kra-evaluator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kra-operator /src/target/release/kra-collector /src/target/release/kra-evaluator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kra-operator"]
CMD ["run"]
