# Two stages: the wheel is built from the source, the image gets only the installed wheel
# (migrations included as package data, dev tooling left out: setup.py). No source tree in
# the image, so nothing in it can lean on files that the package does not carry.
# tests/test_install.py builds from exactly the files the build stage copies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
COPY worker ./worker
COPY sql ./sql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 octopost
USER octopost
EXPOSE 8080
CMD ["octopost", "api", "--host", "0.0.0.0", "--port", "8080", "--processes", "0"]
