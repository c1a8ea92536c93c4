# The registry server image: slim, non-root, nothing but the package and its dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 modelreg
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER modelreg
ENV MODELREG_ADDRESS=0.0.0.0:50051 \
    MODELREG_HOME=/home/modelreg/data
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
s = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=2); \
sys.exit(s.status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["modelreg"]
CMD ["serve"]
