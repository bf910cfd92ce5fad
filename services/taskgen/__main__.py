from libs.service import main
from services.taskgen.service import build
from services.taskgen.settings import TaskgenSettings

if __name__ == "__main__":
    main("taskgen", TaskgenSettings, build)
