from keras_sam3.losses.sam3_loss import SAM3Loss
