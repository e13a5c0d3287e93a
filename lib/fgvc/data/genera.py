"""The coarse level of each dataset ("genus"): one name per class, aligned with the class list.

Fine-grained errors are of two kinds: a wrong genus (an albatross taken for a gull) and a
wrong species inside the right genus (one albatross for another). The genus of a class is
given by its dataset's own module (its rule lives beside its loader):

* SynthBirds (:func:`fgvc.data.cub.synthbirds_genera`, read by the CUB-layout loader): its generator's genus
  (``synthbirds.json``: genera x species);
* CUB-200-2011 (:func:`fgvc.data.cub.cub_genus`): the bird group, the last word of the class name
  (``001.Black_footed_Albatross`` -> ``Albatross``, ``110.Geococcyx`` -> ``Geococcyx``);
* Stanford Cars (:func:`fgvc.data.cars.cars_make`): the make, the first word of the class name, or the first two words for the
  multi-word makes of :data:`CARS_MULTIWORD_MAKES` (``AM General Hummer SUV 2000`` ->
  ``AM General``); hyphenated makes (``Mercedes-Benz``, ``Rolls-Royce``) are one word. The
  196 official class names give 49 makes;
* FGVC-Aircraft (:func:`fgvc.data.aircraft.aircraft_families`): the family (70 in all), from the dataset's own ``families.txt`` and
  ``images_family_{trainval,test}.txt`` (each image's variant and family joined by image id).

The loaders fill ``Split.genera`` (None where the files to tell are absent, e.g. an Aircraft
copy without the family files); :func:`genus_index` turns the names into the per-class genus
index that :func:`fgvc.engine.evaluate` takes. This module gathers the rules under one name for
readers; a new dataset declares its own in its module and adds nothing here.
"""
from __future__ import annotations

from fgvc.data.aircraft import aircraft_families
from fgvc.data.base import genus_index
from fgvc.data.cars import CARS_MULTIWORD_MAKES, cars_make
from fgvc.data.cub import SYNTHBIRDS_META, cub_genus, synthbirds_genera

__all__ = ["CARS_MULTIWORD_MAKES", "SYNTHBIRDS_META", "aircraft_families", "cars_make", "cub_genus", "genus_index",
           "synthbirds_genera"]
