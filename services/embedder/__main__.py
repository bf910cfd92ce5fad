from libs.service import main
from services.embedder.service import build
from services.embedder.settings import EmbedderSettings

if __name__ == "__main__":
    main("embedder", EmbedderSettings, build)
