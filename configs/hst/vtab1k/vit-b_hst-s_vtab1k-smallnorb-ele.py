# HST-S on VTAB-1k SmallNORB/ele. Paper Table 2: 46.2% top-1, 0.28M trainable. The paper gives no HST-S
# dims: side widths [20, 24, 32, 36] (HSN-B's [32, 48, 64, 72] halved from stage 2 on, d_1 = 20) give
# 0.28M with the head (283,944 on CIFAR-100; 282,075 averaged over the 19 heads; count_params.py).
# Task recipe as HST-B's (the authors published one script per task).
_base_ = ['./vit-b_hst_vtab1k-smallnorb-ele.py']

model = dict(backbone=dict(embed_dims=[20, 24, 32, 36]), head=dict(in_channels=36))
