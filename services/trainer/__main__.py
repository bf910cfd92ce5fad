from libs.service import main
from services.trainer.service import build
from services.trainer.settings import TrainerSettings

if __name__ == "__main__":
    main("trainer", TrainerSettings, build)
