# The explorer in a container that starts warm: the checkpoint is downloaded and every MAX graph
# the app uses is compiled while the image is built, so a container answers Runs seconds after
# it starts. Works as a Hugging Face Docker Space (README front matter `sdk: docker`,
# `app_port: 7860`) and self-hosted:
#
#   docker build -t gpt2-explorer .                          # --build-arg MODEL=distilbert/distilgpt2
#   docker run -p 7860:7860 gpt2-explorer
#
# The compiled graphs are only reused on a CPU like the build machine's (README, "Deploy"):
# elsewhere the app compiles them at start, as on a cold host.
FROM python:3.11-slim-bookworm

# Spaces run the container as user 1000; everything the app writes (the Hub cache, MAX's cache,
# its example traces) lives in that user's home.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/huggingface \
    MODULAR_CACHE_DIR=/home/user/modular-cache \
    GPT2_EXPLORER_CACHE_DIR=/home/user/explorer-cache \
    MODULAR_TELEMETRY_ENABLED=0 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user -r requirements.txt

# The engine alone before the warmup, so that a change to the UI reuses the compiled layer. The
# bundled demo model is warmed too: every host offers it, and a visitor who picks it gets it live.
ARG MODEL=openai-community/gpt2
COPY --chown=user gpt2_max gpt2_max
RUN python -m gpt2_max warmup --model "$MODEL" --model austen-gpt2

COPY --chown=user . .
# Visitors may pick only the warmed model (and the bundled demo model, which every host offers);
# the checkpoint is in the image, so the Hub is not asked at start.
ENV GPT2_EXPLORER_MODEL=$MODEL \
    GPT2_EXPLORER_ALLOWED_MODELS=$MODEL \
    HF_HUB_OFFLINE=1
EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
