# -*- coding: utf-8 -*-
"""
@Article{Liu2024DeepETPicker,
  Author = {Liu, Guole and Niu, Tongxin and Qiu, Mengxuan and Zhu, Yun and Sun, Fei and Yang, Ge},
  Title = {DeepETPicker: fast and accurate 3D particle picking for cryo-electron tomography using weakly supervised deep learning},
  Journal = {Nature Communications},
  Year = {2024},
  Volume = {15},
  Pages = {2090},
  doi = {10.1038/s41467-024-46041-0}
}

@Article{Moebel2021DeepFinder,
  Author = {Moebel, Emmanuel and Martinez-Sanchez, Antonio and Lamm, Lorenz and Righetto, Ricardo D. and Wietrzynski, Wojciech and Albert, Sahradha and Lariviere, Damien and Fourmentin, Eric and Pfeffer, Stefan and Ortiz, Julio and Baumeister, Wolfgang and Peng, Tingying and Engel, Benjamin D. and Kervrann, Charles},
  Title = {Deep learning improves macromolecule identification in 3D cellular cryo-electron tomograms},
  Journal = {Nature Methods},
  Year = {2021},
  Volume = {18},
  Pages = {1386--1394},
  doi = {10.1038/s41592-021-01275-4}
}

@InProceedings{Huang2022SparsePicking,
  Author = {Huang, Qinwen and Zhou, Ye and Liu, Hsuan-Fu and Bartesaghi, Alberto},
  Title = {Accurate detection of proteins in cryo-electron tomograms from sparse labels},
  Booktitle = {European Conference on Computer Vision (ECCV)},
  Year = {2022},
  doi = {10.1007/978-3-031-19803-8_38}
}

@Article{Zeng2023DISCA,
  Author = {Zeng, Xiangrui and Kahng, Anson and Xue, Liang and Mahamid, Julia and Chang, Yi-Wei and Xu, Min},
  Title = {High-throughput cryo-ET structural pattern mining by unsupervised deep iterative subtomogram clustering},
  Journal = {Proceedings of the National Academy of Sciences},
  Year = {2023},
  Volume = {120},
  Pages = {e2213149120},
  doi = {10.1073/pnas.2213149120}
}

@Article{Zeng2020GumNet,
  Author = {Zeng, Xiangrui and Xu, Min},
  Title = {Gum-Net: Unsupervised geometric matching for fast and accurate 3D subtomogram image alignment and averaging},
  Booktitle = {CVPR},
  Year = {2020},
  doi = {10.1109/CVPR42600.2020.00413}
}
"""
