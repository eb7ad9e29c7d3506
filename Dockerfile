FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY sql ./sql
RUN pip install --no-cache-dir . && useradd --system --uid 10001 octopost
USER octopost
EXPOSE 8080
CMD ["octopost", "api", "--host", "0.0.0.0", "--port", "8080", "--processes", "0"]
