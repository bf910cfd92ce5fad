from libs.service import main
from services.curator.service import build
from services.curator.settings import CuratorSettings

if __name__ == "__main__":
    main("curator", CuratorSettings, build)
