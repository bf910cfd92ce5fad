from libs.service import main
from services.examplegen.service import build
from services.examplegen.settings import ExamplegenSettings

if __name__ == "__main__":
    main("examplegen", ExamplegenSettings, build)
